// The one authorization point: every channel action asks here before it runs (DEVELOPERS.md seam).
// Without an authz service the reference's behaviour applies: everything is allowed, except the local
// root-shell guard. A later issue plugs authz.v1 Evaluate in behind the same function; any error
// there must deny (fail closed).
export type Action =
  'ssh:shell' | 'ssh:exec' | 'ssh:sftp' | 'ssh:direct-tcpip' | 'ssh:direct-streamlocal' | 'ssh:agent-forward';

export interface ActionRequest {
  action: Action;
  username: string;
  workspace: string;
  blueprint?: string;
  /** Context keys of wire-protocol.md §5.13, only those with a value. */
  context?: Record<string, string>;
  /** `user=` of the user string, when set. */
  asUser?: string;
  /** Whether the identity user may become root (sudo). */
  sudo?: boolean;
}

export type Decision = { allowed: true } | { allowed: false; reason: string };

export interface Authorizer {
  check(req: ActionRequest): Promise<Decision>;
}

/** Reference behaviour without an authz service (reference-behaviour §13.1 step 7, §14.2). */
export const localAuthorizer: Authorizer = {
  async check(req) {
    if (req.action === 'ssh:shell' && req.asUser === 'root' && !req.sudo) {
      return { allowed: false, reason: `user ${req.username} may not open a root shell (no sudo rights)` };
    }
    return { allowed: true };
  },
};
