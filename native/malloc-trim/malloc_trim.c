// Node has no way to ask glibc's allocator to give freed memory back. After a burst of connections the
// gateway's freed buffers sit in fragmented heap pages that free() never returns (it only trims the top
// of the heap), so RSS stays at the burst's peak. malloc_trim(0) releases every whole free page in every
// arena (madvise). On a C library without it (musl) `trim` returns false and does nothing.
#include <node_api.h>
#include <stdbool.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static napi_value Trim(napi_env env, napi_callback_info info) {
  (void)info;
  bool released = false;
#ifdef __GLIBC__
  released = malloc_trim(0) == 1;
#endif
  napi_value result;
  napi_get_boolean(env, released, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_value supported;
  napi_create_function(env, "trim", NAPI_AUTO_LENGTH, Trim, NULL, &fn);
  napi_set_named_property(env, exports, "trim", fn);
#ifdef __GLIBC__
  napi_get_boolean(env, true, &supported);
#else
  napi_get_boolean(env, false, &supported);
#endif
  napi_set_named_property(env, exports, "supported", supported);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
