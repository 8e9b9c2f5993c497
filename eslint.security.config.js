// Static security lint (`npm run lint:security`, part of `make test-static`): eslint-plugin-security over
// the shipped code (src/, scripts/). Kept apart from eslint.config.js so its heuristics never block the
// everyday `npm run lint`; every finding is an error here.
import tseslint from 'typescript-eslint';
import security from 'eslint-plugin-security';

export default tseslint.config(
  { ignores: ['dist/', 'src/gen/', 'node_modules/', 'build/', '.ssh-proxy/', '.tmp/', 'bench/', 'test/'] },
  {
    files: ['src/**/*.ts', 'scripts/**/*.mjs'],
    languageOptions: { parser: tseslint.parser },
    // The code's own eslint-disable comments are for the main config's rules.
    linterOptions: { reportUnusedDisableDirectives: 'off' },
    plugins: { security },
    rules: {
      ...Object.fromEntries(Object.keys(security.configs.recommended.rules).map((r) => [r, 'error'])),
      // Off by design, not by accident:
      // - paths come from the operator's config and the workspace layout; that is what the code is for;
      'security/detect-non-literal-fs-filename': 'off',
      // - obj[key] with typed keys: dozens of false positives under TypeScript, no signal;
      'security/detect-object-injection': 'off',
      // - the agent and the local stack spawn shells and helpers by design (reviewed where they do).
      'security/detect-child-process': 'off',
    },
  },
  {
    // Reviewed: safe-regex flags nested quantifiers by star height alone. These patterns are anchored,
    // their alternatives cannot match the same text, and their input is one config scalar (primitives) or
    // one bounded line of local `ss` output (peercred): no catastrophic backtracking.
    files: ['src/config/primitives.ts', 'src/agent/peercred.ts'],
    rules: { 'security/detect-unsafe-regex': 'off' },
  },
  {
    // Reviewed: anchored patterns whose repeated parts end on a fixed class (ports in policy.yaml, the
    // sessions page's paths, a service-account subject capped at 16 KiB): linear matching.
    files: ['src/local/policy-rules.ts', 'src/local/sessions/web.ts', 'src/ops/sa-token.ts'],
    rules: { 'security/detect-unsafe-regex': 'off' },
  },
  {
    // Reviewed: globs (AcceptEnv, policy.yaml) turned into anchored regexps with every other character
    // escaped; `*` becomes `.*` (polynomial at worst, on names bounded by maxEnvBytes or one rule field).
    files: ['src/gateway/env-policy.ts', 'src/local/policy-rules.ts'],
    rules: { 'security/detect-non-literal-regexp': 'off' },
  },
);
