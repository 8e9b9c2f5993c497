// The `user=` of a login (reference-behaviour §7): checked once, strictly, before any session runs.
// A user without sudo may only run as themselves; every user name must be a POSIX portable one (no
// whitespace, no escapes left), so no spelling (`root%20`, `ROOT`, `./root`) can reach uid 0 through
// a daemon that trims or resolves names differently. The agent applies the same rule
// (src/common/user-names.ts) as a second line of defence.
import { isPortableUserName, runAsProblem } from '../common/user-names.js';

export { isPortableUserName };

/** Why `asUser` is not allowed for `username`, or undefined when it is. */
export function asUserProblem(username: string, asUser: string, sudo: boolean): string | undefined {
  if (asUser !== '' && !isPortableUserName(asUser)) return `the user name in the login (user=) is not valid`;
  return runAsProblem(username, asUser, sudo);
}
