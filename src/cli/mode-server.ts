// In-process mode: one gateway process serves every connection; metrics, health and the control
// service beside it. SIGTERM/SIGINT drain (reference §23.l); a second signal ends at once.
import type { Config } from '../config/load.js';
import { errText, getLogger, type Logger } from '../ops/log.js';
import { GatewayMetrics } from '../ops/metrics.js';
import { startMemoryTrimmer } from '../ops/native-memory.js';
import { gatewayReadiness, startHealthServer, type HealthServer } from '../ops/health.js';
import { startControlFromConfig, type ControlServer } from '../ops/control.js';
import { COMMIT, DESCRIPTION, VERSION } from '../ops/version.js';
import { createGateway, gatewayOptionsFromConfig, testHooksFromEnv } from '../gateway/server.js';
import { createServices } from '../gateway/services.js';

export async function runServerMode(config: Config, log: Logger): Promise<void> {
  const metrics = new GatewayMetrics({ version: VERSION, commit: COMMIT });
  startMemoryTrimmer({ log: getLogger('memory'), onTrim: (n) => metrics.memoryTrimmed(n) });
  let services;
  let gw;
  let health: HealthServer | undefined;
  let control: ControlServer | undefined;
  try {
    services = createServices(config, { metrics, hooks: testHooksFromEnv(log) });
    gw = await createGateway(gatewayOptionsFromConfig(config), services.backends, getLogger('ssh-server'));
    services.attach(gw.registry);
    const g = gw;
    const s = services;
    if (config.metrics.address)
      health = await startHealthServer({
        address: config.metrics.address,
        metrics,
        readiness: gatewayReadiness({
          listening: () => g.listening,
          draining: () => g.draining,
          backends: s.probes,
        }),
        log: getLogger('metrics'),
      });
    control = await startControlFromConfig(config, {
      registry: gw.registry,
      log: getLogger('grpc'),
      build: { version: VERSION, commit: COMMIT, description: DESCRIPTION },
    });
  } catch (err) {
    log.error(`Failed to start server: ${errText(err)}`);
    process.exit(1);
  }
  const g = gw;
  const s = services;

  let stopping = false;
  const shutdown = async (drain: boolean): Promise<void> => {
    metrics.setDraining(true);
    if (drain) await g.drain(config.server.drainTimeout * 1000);
    else await g.stop();
    await control?.close();
    await s.close();
    await health?.close();
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'Second shutdown signal: disconnecting everyone now');
      void g.stop().finally(() => process.exit(0));
      return;
    }
    stopping = true;
    log.info(
      { signal, drainTimeout: config.server.drainTimeout },
      'Received shutdown signal, stopping server...',
    );
    shutdown(true).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error(`Failed to stop server: ${errText(err)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
