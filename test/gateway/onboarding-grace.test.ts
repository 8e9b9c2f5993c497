// The gateway's login grace timer and onboarding (§23.g) through the real createGateway: the timer
// does not run while the onboarding prompt waits for the person, and runs again once the onboarding
// deadline has passed with the prompt unanswered.
import { testGatewayOptions } from '../helpers/gateway-options.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { createIdentityClient, type IdentityBackend } from '../../src/backends/identity.js';
import { createProvisionerClient, type ProvisionerBackend } from '../../src/backends/provisioner.js';
import { generateHostKey } from '../../src/gateway/hostkeys.js';
import { createGateway, type RunningGateway } from '../../src/gateway/server.js';
import { startLocalIdentity, type LocalIdentity } from '../../src/local/identity.js';
import { startLocalWeb, type LocalWeb } from '../../src/local/web/server.js';
import { tempDirFor } from '../helpers/tmp.js';
import { captureLogger, makeKey } from '../local/helpers.js';
import { decideOnPage, kbd, pubkey, runClient, type PromptSeen } from './auth-harness.js';

const GRACE_MS = 1500;

function codeOf(p: PromptSeen): string {
  return /enter the code: ([A-Z]{4}-[A-Z]{4})/.exec(p.prompts[0]?.prompt ?? '')?.[1] ?? '';
}

describe('login grace time and onboarding', { timeout: 120_000 }, () => {
  const tmp = tempDirFor(after, 'spx-grace-');
  let web: LocalWeb;
  let svc: LocalIdentity;
  let identity: IdentityBackend;
  let provisioner: ProvisionerBackend;
  const gateways: RunningGateway[] = [];

  async function gateway(onboardingTimeoutMs: number): Promise<RunningGateway> {
    const opts = testGatewayOptions(readFileSync(tmp.join('host_key')), {
      handshakeTimeoutMs: GRACE_MS,
      onboardingTimeoutMs,
    });
    const gw = await createGateway(opts, { identity, provisioner }, captureLogger().logger);
    gateways.push(gw);
    return gw;
  }

  before(async () => {
    generateHostKey(tmp.join('host_key'));
    web = await startLocalWeb({ host: '127.0.0.1', port: 0 }, captureLogger().logger);
    svc = await startLocalIdentity({
      dataDir: tmp.join('data'),
      homeDir: tmp.join('home'),
      logger: captureLogger().logger,
      onboarding: { web },
    });
    identity = createIdentityClient({ address: svc.address });
    provisioner = createProvisionerClient({ address: '127.0.0.1:1' });
  });
  after(async () => {
    for (const g of gateways) await g.stop();
    identity?.close();
    provisioner?.close();
    await svc?.close();
    await web?.close();
  });

  test('a prompt held twice as long as the grace time still completes the login', async () => {
    const gw = await gateway(60_000);
    const k = makeKey(tmp.join('id_patient'));
    const c = runClient(gw.port, 'patient', [
      kbd('patient', async (p) => {
        // Deliberately longer than the login grace time: the point of this test is that it does not fire.
        await delay(2 * GRACE_MS);
        await decideOnPage(svc.approvalUrl ?? '', codeOf(p), 'approve', { pasted: k.pubLine });
      }),
      pubkey('patient', k.path),
    ]);
    assert.equal(await c.done, 'ready');
    c.end();
  });

  test('past the onboarding deadline the grace time runs again and ends the connection', async () => {
    const gw = await gateway(500);
    const c = runClient(gw.port, 'gone', [kbd('gone', () => new Promise<void>(() => undefined))]);
    assert.equal(await c.done, 'closed');
  });
});
