// Local policy service: a real authz.v1.AuthzService (wire-protocol §2.5, §5.13) on loopback, deciding
// with the rules of `<data-dir>/policy.yaml` (policy-rules.ts, docs/policy.md).
//
// The file is checked on every call (one stat) and also watched, so a change applies to the next
// action and a mistake is logged when the file is saved. A broken file keeps the last good policy and
// logs why; a group- or world-writable file is refused the same way (anyone who can write it could
// grant themselves anything). No file: allow everything, as the reference without authz. A broken or
// unsafe file at start-up is an error: the service does not start on a policy it cannot read.
import { readFileSync, statSync, unwatchFile, watchFile } from 'node:fs';
import { join } from 'node:path';
import { Server, status } from '@grpc/grpc-js';
import { errText, getLogger, type Logger } from '../ops/log.js';
import { AuthzServiceService, type AuthzServiceServer, type EvaluateRequest } from '../gen/authz/v1/authz.js';
import { bindServer, grpcError, shutdownServer, unary } from './grpc-server.js';
import { ALLOW_ALL, evaluatePolicy, parsePolicy, type Policy, type PolicyDecision } from './policy-rules.js';

export interface LocalPolicyOptions {
  dataDir: string;
  /** host:port or unix:/path; default 127.0.0.1:0. */
  listen?: string;
  /** When set, every call must carry `authorization: Bearer <content of this file>`. */
  tokenFile?: string;
  logger?: Logger;
  /** Poll interval of the file watch in ms (default 1000). */
  watchIntervalMs?: number;
}

export interface LocalPolicy {
  address: string;
  /** The policy file (it need not exist). */
  file: string;
  close(): Promise<void>;
}

/** The problem with a policy file's permissions, or undefined when they are safe. */
export function unsafeMode(file: string, mode: number): string | undefined {
  if ((mode & 0o022) === 0) return undefined;
  return `policy file ${file} is group- or world-writable; refusing it (run: chmod go-w '${file}')`;
}

/** The current policy of a file, re-read when the file changes (by inode, size, mtime, ctime, mode). */
export class PolicyFile {
  private policy: Policy = ALLOW_ALL;
  private signature = '';

  constructor(
    readonly file: string,
    private readonly log: Logger,
  ) {
    const problem = this.refresh();
    if (problem) throw new Error(problem);
  }

  current(): Policy {
    this.refresh();
    return this.policy;
  }

  /** Re-reads the file if it changed; returns the problem when the new version was refused. */
  refresh(): string | undefined {
    let sig: string;
    let mode = 0;
    try {
      const st = statSync(this.file);
      mode = st.mode;
      sig = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.mode}`;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        const problem = `cannot read policy file ${this.file}: ${errText(e)}`;
        this.log.error({ file: this.file, err: errText(e) }, `${problem}; keeping the last good policy`);
        return problem;
      }
      sig = 'missing';
    }
    if (sig === this.signature) return undefined;
    this.signature = sig;
    if (sig === 'missing') {
      if (this.policy !== ALLOW_ALL)
        this.log.warn({ file: this.file }, 'policy file removed: every action is allowed again');
      this.policy = ALLOW_ALL;
      return undefined;
    }
    const unsafe = unsafeMode(this.file, mode);
    if (unsafe) {
      this.log.error({ file: this.file }, `${unsafe}; keeping the last good policy`);
      return unsafe;
    }
    try {
      this.policy = parsePolicy(readFileSync(this.file, 'utf8'));
      this.log.info(
        { file: this.file, rules: this.policy.rules.length, default: this.policy.defaultEffect },
        'policy loaded',
      );
      return undefined;
    } catch (e) {
      const problem = `invalid policy file ${this.file}: ${errText(e)}`;
      this.log.error({ file: this.file, err: errText(e) }, `${problem}; keeping the last good policy`);
      return problem;
    }
  }
}

export async function startLocalPolicy(opts: LocalPolicyOptions): Promise<LocalPolicy> {
  const log = opts.logger ?? getLogger('local-policy');
  const file = join(opts.dataDir, 'policy.yaml');
  const policy = new PolicyFile(file, log);
  // Prompt feedback when the file is saved; the per-call check makes the next action exact anyway.
  const onChange = () => void policy.refresh();
  watchFile(file, { interval: opts.watchIntervalMs ?? 1000, persistent: false }, onChange);

  const impl: AuthzServiceServer = {
    evaluate: unary(opts.tokenFile, log, 'Evaluate', (req: EvaluateRequest) => {
      if (!req.action) throw grpcError(status.INVALID_ARGUMENT, 'action is required');
      const d: PolicyDecision = evaluatePolicy(policy.current(), {
        action: req.action,
        resource: req.resource,
        context: req.context,
      });
      const fields = {
        action: req.action,
        user: req.resource?.type === 'user' ? req.resource.id : req.resource?.attributes.owner,
        resource: req.resource?.id,
        allowed: d.allowed,
        rule: d.rule,
      };
      if (d.allowed) log.debug(fields, 'allowed');
      else log.info({ ...fields, reason: d.reason }, 'denied');
      return { allowed: d.allowed, reason: d.reason, obligations: d.obligations };
    }),
  };

  const server = new Server();
  server.addService(AuthzServiceService, impl);
  let address: string;
  try {
    address = await bindServer(server, opts.listen ?? '127.0.0.1:0');
  } catch (e) {
    unwatchFile(file, onChange);
    throw e;
  }
  log.info({ address, file }, 'local policy service listening');
  let closed: Promise<void> | undefined;
  return {
    address,
    file,
    close: () => {
      unwatchFile(file, onChange);
      return (closed ??= shutdownServer(server));
    },
  };
}
