// The local stack's session service in one call: the session.v1 gRPC server on loopback and, when the
// stack has a web server, the sessions page on it.
import { getLogger, type Logger } from '../../ops/log.js';
import type { LocalWeb } from '../web/server.js';
import {
  startLocalSessionService,
  type LocalSessionService,
  type LocalSessionServiceOptions,
} from './service.js';
import { sessionsRoute } from './web.js';

export { startLocalSessionService, type LocalSessionService } from './service.js';
export { sessionsRoute } from './web.js';

export interface LocalSessionsOptions extends LocalSessionServiceOptions {
  /** The stack's web server; the page is registered at `/sessions` when given. */
  web?: LocalWeb;
  logger?: Logger;
}

export interface LocalSessions extends LocalSessionService {
  /** URL of the sessions page, when a web server was given. */
  pageUrl: string | undefined;
}

export async function startLocalSessions(o: LocalSessionsOptions): Promise<LocalSessions> {
  const svc = await startLocalSessionService({ ...o, logger: o.logger ?? getLogger('session') });
  if (o.web) o.web.route(sessionsRoute({ store: svc.store, recordingsDir: svc.recordingsDir }));
  return { ...svc, pageUrl: o.web ? `${o.web.url}/sessions` : undefined };
}
