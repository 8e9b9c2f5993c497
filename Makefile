# The reference gateway's make targets, mapped to this project (docs/deploying.md). `make help` lists them.
# Everything here is a thin wrapper over npm scripts and scripts/*.mjs, so pipelines may call either.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Build identity, injected into dist/build-info.json by `npm run build` (scripts/build-info.mjs) and into
# the image labels; `ssh-proxy -v` prints them without git at run time.
VERSION ?= $(shell git describe --tags --match 'v*' 2>/dev/null || echo 0.0.0)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo 0000000)
export SSH_PROXY_VERSION := $(VERSION)
export SSH_PROXY_COMMIT  := $(COMMIT)

# Container image: RUNTIME=alpine (shell, restart-loop entrypoint) or distroless (non-root, no shell).
RUNTIME ?= distroless
IMAGE   ?= ssh-proxy
IMAGE_TAG ?= $(IMAGE):$(VERSION)-$(RUNTIME)
ENGINE  ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

# Production bundle (the reference's `vendor`): a directory and a tarball of it.
BUNDLE_DIR ?= build/ssh-proxy
BUNDLE_TAR ?= build/ssh-proxy-$(VERSION)-linux-$(shell uname -m)-$(shell ldd --version 2>&1 | grep -qi musl && echo musl || echo glibc).tar.gz

.PHONY: help deps build test test-static test-self bundle vendor image clean

help: ## list the targets
	@echo "ssh-proxy $(VERSION) ($(COMMIT))"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  make \1\t/' | expand -t 24
	@echo "Variables: VERSION COMMIT RUNTIME=alpine|distroless IMAGE IMAGE_TAG ENGINE BUNDLE_DIR AUDIT_FAIL_LEVEL"

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

deps: node_modules/.package-lock.json ## install dependencies (npm ci) when the lockfile changed

build: deps ## compile TypeScript to dist/ and write dist/build-info.json (VERSION, COMMIT)
	npm run build

test: deps ## the full test suite: exactly `npm test` (what CI runs)
	npm test

test-static: deps ## lint, type check, generated-code check, security lint, production dependency audit
	npm run lint
	npm run typecheck
	npm run gen:check
	npm run lint:security
	node scripts/audit-summary.mjs

test-self: test-static build ## static checks + build + smoke: -v, -h and a start with config/config.yaml
	npm run check:native
	node scripts/smoke.mjs

bundle: build ## self-contained production bundle: build/ssh-proxy/ and a tarball (deploy/bundle/README.md)
	node scripts/bundle.mjs --out $(BUNDLE_DIR) --tar $(BUNDLE_TAR)

vendor: bundle ## the reference's name for `bundle`

image: ## container image ssh-proxy:VERSION-RUNTIME (RUNTIME=alpine|distroless)
	@if [ -z "$(ENGINE)" ] || ! $(ENGINE) info >/dev/null 2>&1; then \
	  echo "make image: no working container engine (docker or podman) on this machine$(if $(ENGINE), ($(ENGINE) is installed but its daemon does not answer),)."; \
	  echo "  Run on a machine with one, or set ENGINE=/path/to/engine. The image's build steps are"; \
	  echo "  the tested 'make bundle' steps (scripts/bundle.mjs); see docs/deploying.md."; \
	  exit 2; \
	fi
	@case "$(RUNTIME)" in alpine|distroless) ;; *) echo "make image: RUNTIME must be alpine or distroless, got '$(RUNTIME)'"; exit 2;; esac
	$(ENGINE) build -f deploy/docker/Dockerfile --target $(RUNTIME) \
	  --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE_TAG) .

clean: ## remove dist/ and build/
	rm -rf dist build
