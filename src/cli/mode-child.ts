// A forked child (`--child`): serves the one connection the parent handed over on fd 3 with the
// normal handler and its own backend clients. SIGTERM: no new channels; the connection ends once its
// channels have, or when the drain timeout passes (reference §4.3, §23.i). Pre-authentication
// decisions are the parent's, asked over the link on fd 4 (forking-ipc.ts).
import type { Config } from '../config/load.js';
import { getLogger, type Logger } from '../ops/log.js';
import { startMemoryTrimmer } from '../ops/native-memory.js';
import { runChild } from '../gateway/forking-child.js';
import { ChildPreauthLink } from '../gateway/forking-ipc.js';
import { preauthOptionsFromConfig } from '../gateway/preauth.js';
import {
  createGateway,
  gatewayOptionsFromConfig,
  RESTART_MESSAGE,
  testHooksFromEnv,
} from '../gateway/server.js';
import { createServices } from '../gateway/services.js';

export function runChildMode(config: Config, log: Logger): void {
  const drainTimeoutMs = config.server.drainTimeout * 1000;
  // A long-lived connection has bursts too; each child returns its own freed memory.
  startMemoryTrimmer({ log: getLogger('memory') });
  runChild({
    drainTimeoutMs,
    log,
    serve: async ({ socket, connectionId, onDrain }) => {
      const services = createServices(config, { hooks: testHooksFromEnv(log) });
      const preauth = ChildPreauthLink.fromEnv(
        preauthOptionsFromConfig(config.server),
        log.child({ conn: connectionId }),
      );
      const gw = await createGateway(
        gatewayOptionsFromConfig(config),
        preauth ? { ...services.backends, preauth } : services.backends,
        getLogger('ssh-server'),
        {
          listen: false,
        },
      );
      services.attach(gw.registry);
      onDrain(() => void gw.finishChannels(drainTimeoutMs, RESTART_MESSAGE));
      try {
        await gw.serve(socket, connectionId);
        // EndSession and the end of recordings, bounded inside stop().
        await gw.stop();
      } finally {
        await services.close();
      }
    },
  });
}
