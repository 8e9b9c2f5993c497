// A forked child (`--child`): serves the one connection the parent handed over on fd 3 with the
// normal handler and its own backend clients. SIGTERM: no new channels; the connection ends once its
// channels have, or when the drain timeout passes (reference §4.3, §23.i).
import type { Config } from '../config/load.js';
import { getLogger, type Logger } from '../ops/log.js';
import { runChild } from '../gateway/forking-child.js';
import {
  createGateway,
  gatewayOptionsFromConfig,
  RESTART_MESSAGE,
  testHooksFromEnv,
} from '../gateway/server.js';
import { createServices } from '../gateway/services.js';

export function runChildMode(config: Config, log: Logger): void {
  const drainTimeoutMs = config.server.drainTimeout * 1000;
  runChild({
    drainTimeoutMs,
    log,
    serve: async ({ socket, connectionId, onDrain }) => {
      const services = createServices(config, { hooks: testHooksFromEnv(log) });
      const gw = await createGateway(
        gatewayOptionsFromConfig(config),
        services.backends,
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
