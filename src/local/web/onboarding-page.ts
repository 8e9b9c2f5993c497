// The onboarding approval page of the local identity service: a person enters the user code the SSH
// client showed, sees the user name, approves the key the client offered (or pastes one) or denies;
// an approved user is added to users.yaml and can log in at once.
//
// Plain HTML forms, no script. Loopback only, and still careful: the Host header must be the page's
// own (no DNS rebinding), a cross-site Origin is refused, every form carries a single-use token
// issued with the page (CSRF), and wrong codes are rate-limited.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errText, type Logger } from '../../ops/log.js';
import { fingerprint, type DeviceFlowRecord, type DeviceFlows, type OfferedKeys } from '../device-flows.js';
import { parseAuthorizedKeyLine, type PublicKey } from '../keys.js';
import { addUserToFile, UsersFileError, type UserStore } from '../users.js';
import { escapeHtml, page, readBody, sendHtml, type LocalWeb } from './server.js';

export const ONBOARD_PATH = '/onboard';
const DECIDE_PATH = '/onboard/decide';
const TOKEN_TTL_MS = 30 * 60_000;
const MAX_TOKENS = 1000;
const WRONG_CODES_PER_MINUTE = 20;

interface Deps {
  flows: DeviceFlows;
  offered: OfferedKeys;
  users: UserStore;
  log: Logger;
}

/** Single-use form tokens, bounded in number and age. */
class FormTokens {
  private readonly tokens = new Map<string, number>();

  issue(): string {
    const t = randomBytes(18).toString('base64url');
    const now = Date.now();
    for (const [k, at] of this.tokens) if (now - at > TOKEN_TTL_MS) this.tokens.delete(k);
    for (const k of this.tokens.keys()) {
      if (this.tokens.size < MAX_TOKENS) break;
      this.tokens.delete(k);
    }
    this.tokens.set(t, now);
    return t;
  }

  consume(t: string | null): boolean {
    if (!t) return false;
    const at = this.tokens.get(t);
    this.tokens.delete(t);
    return at !== undefined && Date.now() - at <= TOKEN_TTL_MS;
  }
}

export interface OnboardingPage {
  /** The page's address (the device flow's verification URL). */
  url: string;
  /** Stops answering (the route stays registered but passes requests on). */
  close(): void;
}

/** Registers the page on `web`. */
export function registerOnboardingPage(web: LocalWeb, deps: Deps): OnboardingPage {
  let closed = false;
  const tokens = new FormTokens();
  const origin = new URL(web.url);
  const wrongCodes: number[] = [];

  const codeForm = (res: ServerResponse, status: number, error?: string, code = '') =>
    sendHtml(
      res,
      status,
      page(
        'Approve an SSH onboarding',
        errorBlock(error) +
          `<p>Your SSH client shows a code. Enter it here to approve the new user.</p>` +
          `<form method="post" action="${ONBOARD_PATH}">` +
          hidden('token', tokens.issue()) +
          `<label for="code">User code</label>` +
          `<input id="code" name="code" value="${escapeHtml(code)}" required autofocus autocomplete="off" ` +
          `autocapitalize="characters" spellcheck="false" placeholder="ABCD-EFGH" aria-describedby="code-help">` +
          `<p id="code-help">Eight letters, as shown after “enter the code:”.</p>` +
          `<p><button type="submit">Continue</button></p></form>`,
      ),
    );

  const decideForm = (res: ServerResponse, f: DeviceFlowRecord, error?: string, pasted = '') => {
    const keys = deps.offered.recent(f.username);
    const choices = keys
      .map((k, i) => {
        const fp = fingerprint(k);
        const id = `key-${i}`;
        const checked = keys.length === 1 ? ' checked' : '';
        return (
          `<div><input type="radio" id="${id}" name="key" value="${escapeHtml(fp)}"${checked}>` +
          `<label for="${id}">${escapeHtml(k.type)} <code>${escapeHtml(fp)}</code> ` +
          `(offered by the SSH client)</label></div>`
        );
      })
      .join('');
    const pastedChecked = keys.length === 0 ? ' checked' : '';
    sendHtml(
      res,
      error ? 422 : 200,
      page(
        `Approve user ${f.username}`,
        errorBlock(error) +
          `<p>An SSH client asks to create the user <strong>${escapeHtml(f.username)}</strong> ` +
          `(code <code>${escapeHtml(f.userCode)}</code>). After approval the user logs in with the key ` +
          `chosen below.</p>` +
          `<form method="post" action="${DECIDE_PATH}">` +
          hidden('token', tokens.issue()) +
          hidden('code', f.userCode) +
          `<fieldset><legend>Public key of ${escapeHtml(f.username)}</legend>` +
          (keys.length > 1
            ? `<p>Several keys were offered; compare with <code>ssh-keygen -lf ~/.ssh/id_*.pub</code>.</p>`
            : '') +
          choices +
          `<div><input type="radio" id="key-pasted" name="key" value="pasted"${pastedChecked}>` +
          `<label for="key-pasted">Use this public key (one line from a <code>.pub</code> file):</label></div>` +
          `<textarea id="pasted" name="pasted" rows="3" aria-label="Public key" spellcheck="false">` +
          `${escapeHtml(pasted)}</textarea></fieldset>` +
          `<p><button type="submit" name="decision" value="approve">Approve</button> ` +
          `<button type="submit" name="decision" value="deny">Deny</button></p></form>`,
      ),
    );
  };

  const done = (res: ServerResponse, title: string, html: string) => sendHtml(res, 200, page(title, html));

  /** Looks up a typed code; answers with the code form (and an error) when it is not usable. */
  const usableFlow = (res: ServerResponse, code: string): DeviceFlowRecord | undefined => {
    const f = code ? deps.flows.find(code) : undefined;
    if (!f) {
      const now = Date.now();
      while (wrongCodes.length && now - (wrongCodes[0] ?? 0) > 60_000) wrongCodes.shift();
      wrongCodes.push(now);
      if (wrongCodes.length > WRONG_CODES_PER_MINUTE)
        codeForm(res, 429, 'Too many wrong codes. Wait a minute, then try again.');
      else codeForm(res, 422, 'This code is not valid. Check it and try again.', code);
      return undefined;
    }
    if (f.state !== 'pending') {
      codeForm(res, 422, `This code was already used (the onboarding was ${f.state}).`);
      return undefined;
    }
    if (deps.flows.expired(f)) {
      codeForm(res, 422, 'This code has expired. Connect with ssh again to get a new code.');
      return undefined;
    }
    return f;
  };

  const decide = (res: ServerResponse, form: URLSearchParams) => {
    const f = usableFlow(res, form.get('code') ?? '');
    if (!f) return;
    const decision = form.get('decision');
    if (decision === 'deny') {
      deps.flows.decide(f, 'denied');
      deps.log.info({ user: f.username }, 'onboarding denied on the approval page');
      return done(
        res,
        'Onboarding denied',
        `<p role="status">The user <strong>${escapeHtml(f.username)}</strong> was not created.</p>`,
      );
    }
    if (decision !== 'approve') return decideForm(res, f, 'Choose Approve or Deny.');
    const pasted = form.get('pasted') ?? '';
    const choice = form.get('key') ?? '';
    let key: PublicKey | undefined;
    if (choice === 'pasted') {
      key = parseAuthorizedKeyLine(pasted);
      if (!key)
        return decideForm(
          res,
          f,
          'That is not a public key. Paste one line such as “ssh-ed25519 AAAA… you@host”.',
          pasted,
        );
    } else {
      key = deps.offered.recent(f.username).find((k) => fingerprint(k) === choice);
      if (!key) return decideForm(res, f, 'Choose a key (or paste one).', pasted);
    }
    const line = `${key.type} ${key.blob.toString('base64')}`;
    try {
      addUserToFile(deps.users.file, { name: f.username, authorizedKeys: [line] });
    } catch (e) {
      deps.log.error({ user: f.username, err: errText(e) }, 'cannot add the onboarded user');
      const why = e instanceof UsersFileError ? e.message : 'the users file could not be written';
      return decideForm(res, f, `The user could not be created: ${why}.`, pasted);
    }
    deps.flows.decide(f, 'approved');
    deps.log.info({ user: f.username, key: fingerprint(key) }, 'onboarding approved on the approval page');
    return done(
      res,
      'Onboarding approved',
      `<p role="status" class="ok">The user <strong>${escapeHtml(f.username)}</strong> was created ` +
        `with the key <code>${escapeHtml(fingerprint(key))}</code>.</p>` +
        `<p>Go back to your terminal and press Enter.</p>`,
    );
  };

  web.route(async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    if (closed || (url.pathname !== ONBOARD_PATH && url.pathname !== DECIDE_PATH)) return false;
    if (req.headers.host !== origin.host) {
      sendHtml(
        res,
        421,
        page('Wrong address', `<p>Open this page at ${escapeHtml(web.url + ONBOARD_PATH)}.</p>`),
      );
      return true;
    }
    if (req.method === 'GET' && url.pathname === ONBOARD_PATH) {
      codeForm(res, 200, undefined, url.searchParams.get('code') ?? '');
      return true;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: url.pathname === ONBOARD_PATH ? 'GET, POST' : 'POST' }).end();
      return true;
    }
    const from = req.headers.origin;
    if (from !== undefined && from !== origin.origin) {
      sendHtml(res, 403, page('Refused', '<p>Forms from other sites are refused.</p>'));
      return true;
    }
    const form = new URLSearchParams(await readBody(req, 16 * 1024));
    if (!tokens.consume(form.get('token'))) {
      codeForm(res, 403, 'This form has expired. Enter the code again.');
      return true;
    }
    if (url.pathname === ONBOARD_PATH) {
      const f = usableFlow(res, form.get('code') ?? '');
      if (f) decideForm(res, f);
    } else {
      decide(res, form);
    }
    return true;
  });
  return {
    url: `${web.url}${ONBOARD_PATH}`,
    close: () => {
      closed = true;
    },
  };
}

function hidden(name: string, value: string): string {
  return `<input type="hidden" name="${name}" value="${escapeHtml(value)}">`;
}

function errorBlock(error: string | undefined): string {
  return error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : '';
}
