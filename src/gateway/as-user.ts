// The `user=` of a login (reference-behaviour §7): checked once, strictly, before any session runs.
// A user without sudo may only run as themselves; every user name must be a POSIX portable one (no
// whitespace, no escapes left), so no spelling (`root%20`, `ROOT`, `./root`) can reach uid 0 through
// a daemon that trims or resolves names differently.

/** POSIX portable user name: [A-Za-z0-9._-], not starting with '-', at most 32 characters. */
const PORTABLE = /^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$/;

export function isPortableUserName(name: string): boolean {
  return PORTABLE.test(name) && name !== '.' && name !== '..';
}

/** Why `asUser` is not allowed for `username`, or undefined when it is. */
export function asUserProblem(username: string, asUser: string, sudo: boolean): string | undefined {
  if (asUser === '') return undefined;
  if (!isPortableUserName(asUser)) return `the user name in the login (user=) is not valid`;
  if (asUser === username) return undefined;
  if (!sudo) return `user ${username} may not run as ${asUser} (no sudo rights)`;
  return undefined;
}
