// Relays one socket over a bidi stream, with the reference's "first EOF ends everything" rules or,
// when the client opted in, half-close propagation (§5.5, §5.6, §9.5, §9.6).
import type { Socket } from 'node:net';
import type { status } from '@grpc/grpc-js';
import type { Logger } from '../ops/log.js';
import { errText } from '../ops/log.js';
import { FrameGatherer } from '../common/k8shelld-wire.js';
import type { Stream } from './rpc.js';

export interface BridgeOptions<Req, Res> {
  s: Stream<Req, Res>;
  sock: Socket;
  halfClose: boolean;
  /** Status for socket errors after the connect; undefined = log and end OK. */
  errorStatus?: status;
  dataMsg(b: Buffer): Res;
  eofMsg(): Res;
  /** Pauses/resumes reading the client stream (backpressure from the socket). */
  pauseClient(): void;
  resumeClient(): void;
  log: Logger;
}

export class SocketBridge<Req, Res> {
  private clientDone = false;
  private targetDone = false;
  private readonly gather: FrameGatherer;

  constructor(private readonly o: BridgeOptions<Req, Res>) {
    const { s, sock } = o;
    // Reads of one turn go out as one frame (one copy); flushed before EOF and the end.
    const g = (this.gather = new FrameGatherer(
      (b) => s.send(o.dataMsg(b)),
      () => s.needsDrain,
    ));
    sock.on('data', (d: Buffer) => {
      if (!g.push(d)) {
        sock.pause();
        s.whenDrained(() => sock.resume());
      }
    });
    sock.on('end', () => {
      g.flush();
      if (!o.halfClose) return this.stop();
      this.targetDone = true;
      s.send(o.eofMsg());
      this.maybeDone();
    });
    sock.on('error', (err) => {
      o.log.debug({ err: errText(err) }, 'socket error');
      if (o.errorStatus !== undefined) s.fail(o.errorStatus, errText(err));
      this.stop();
    });
    sock.on('close', () => this.stop());
    s.onCancel(() => sock.destroy());
  }

  /** Bytes from the client. */
  write(data: Buffer): void {
    if (this.clientDone || data.length === 0 || this.o.sock.destroyed) return;
    if (!this.o.sock.write(data)) {
      this.o.pauseClient();
      this.o.sock.once('drain', () => this.o.resumeClient());
    }
  }

  /** The client half-closed its side of the stream. */
  clientEnd(): void {
    if (!this.o.halfClose) return this.stop();
    this.clientDone = true;
    this.o.sock.end(); // shutdown(SHUT_WR): the destination sees EOF, replies keep flowing
    this.maybeDone();
  }

  /** Ends the relay and the stream (OK unless a failure was already reported). */
  stop(): void {
    this.gather.flush();
    this.o.sock.destroy();
    this.o.s.finish();
  }

  private maybeDone(): void {
    if (this.clientDone && this.targetDone) this.stop();
  }
}
