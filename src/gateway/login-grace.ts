// The login grace time (sshd's LoginGraceTime, reference `SSHHandshakeTimeout`): key exchange and
// authentication must finish in time or the socket is destroyed. It pauses while a keyboard-interactive
// onboarding prompt waits for a person (that wait has its own deadline, reference §23.g).

export interface LoginGrace {
  /** Authentication finished (or the socket closed): the timer is gone for good. */
  cancel(): void;
  pause(): void;
  /** Runs again with the time that was left. */
  resume(): void;
  readonly expired: boolean;
}

export function armLoginGrace(ms: number, onExpire: () => void): LoginGrace {
  let left = ms;
  let started = Date.now();
  let done = false;
  let expired = false;
  const fire = () => {
    timer = undefined;
    done = true;
    expired = true;
    onExpire();
  };
  let timer: NodeJS.Timeout | undefined = setTimeout(fire, left);
  return {
    cancel() {
      done = true;
      clearTimeout(timer);
      timer = undefined;
    },
    pause() {
      if (!timer) return;
      clearTimeout(timer);
      timer = undefined;
      left = Math.max(0, left - (Date.now() - started));
    },
    resume() {
      if (timer || done) return;
      started = Date.now();
      timer = setTimeout(fire, left);
    },
    get expired() {
      return expired;
    },
  };
}
