// The forking parent (`server.forking: true`): accepts and hands each socket to a child process. It
// loads no backend client (reference §4.2); health and metrics describe the parent itself.
import type { Config } from '../config/load.js';
import { errText, getLogger, type Logger } from '../ops/log.js';
import { ForkingParent, forkingOptionsFromConfig } from '../gateway/forking.js';
import { hostKeyTypes } from '../gateway/hostkey-type.js';
import { preauthOptionsFromConfig } from '../gateway/preauth.js';
import { GatewayMetrics } from '../ops/metrics.js';
import { gatewayReadiness, startHealthServer, type HealthServer } from '../ops/health.js';
import { COMMIT, VERSION, sshIdent } from '../ops/version.js';

export async function runForkingParent(
  config: Config,
  cli: { configPath: string; logtext: boolean },
  log: Logger,
): Promise<void> {
  const metrics = new GatewayMetrics({ version: VERSION, commit: COMMIT });
  try {
    // The children load the keys; the parent checks them now, so a bad path fails the start.
    const types = hostKeyTypes(config.server.serverKey);
    const parent = await ForkingParent.start({
      ...forkingOptionsFromConfig(config.server, cli, {
        ident: `SSH-2.0-${sshIdent()}`,
        log: getLogger('ssh-server'),
        metrics,
        // The caps and the backoff hold across children: the parent admits before it forks.
        preauth: preauthOptionsFromConfig(config.server),
      }),
      hostKeyTypes: types,
    });
    let health: HealthServer | undefined;
    if (config.metrics.address) {
      health = await startHealthServer({
        address: config.metrics.address,
        metrics,
        readiness: gatewayReadiness({
          listening: () => parent.isAccepting,
          draining: () => parent.isDraining,
        }),
        log: getLogger('metrics'),
        // During a hand-over the old parent still holds the port until it exits.
        bindRetryMs: 10_000,
      });
    }
    // The health listener is closed before the process exits, so that after SIGUSR2 the new parent
    // gets the port as soon as possible.
    const h = health;
    parent.installSignalHandlers((code) => {
      void (h ? withDeadline(h.close(), 2000) : Promise.resolve()).finally(() => process.exit(code));
    });
  } catch (err) {
    log.error(`Failed to start server: ${errText(err)}`);
    process.exit(1);
  }
}

/** `p`, or nothing after `ms`: shutdown never hangs on a listener. */
function withDeadline(p: Promise<void>, ms: number): Promise<void> {
  return Promise.race([p, new Promise<void>((r) => setTimeout(r, ms).unref())]);
}
