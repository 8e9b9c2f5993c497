// The one rule for OS user names that reach a workspace (the `user=` of a login, the agent's
// `as_user`): POSIX portable names only, compared exactly. Neither the gateway nor the agent trims,
// lowercases or unescapes a name, so no spelling (`root%20`, ` root`, `ROOT`, `./root`) can reach a
// user other than the one written.

/** POSIX portable user name: [A-Za-z0-9._-], not starting with '-', at most 32 characters. */
const PORTABLE = /^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$/;

export function isPortableUserName(name: string): boolean {
  return PORTABLE.test(name) && name !== '.' && name !== '..';
}

/**
 * Why running as `asUser` is not allowed for a workspace whose own user is `self`, or undefined when
 * it is. "" means the workspace's own user. Without sudo rights a user may only run as themselves.
 */
export function runAsProblem(self: string, asUser: string, sudo: boolean): string | undefined {
  if (asUser === '') return undefined;
  if (!isPortableUserName(asUser)) return 'the user name (user=) is not a valid user name';
  if (asUser === self) return undefined;
  if (!sudo) return `user ${self} may not run as ${asUser} (no sudo rights)`;
  return undefined;
}
