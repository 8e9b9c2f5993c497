// A real authz.v1 gRPC server for the policy end-to-end tests, placed between the gateway and the local
// policy service (the stack's `authz.address` is pointed at it through `startE2E({ configure })`).
// It records every EvaluateRequest it receives and, per mode, forwards the call to the local policy
// service (policy.yaml decides), holds it unanswered, answers bytes that do not decode or a message of
// the wrong shape, or stops listening altogether.
import {
  credentials,
  Server,
  ServerCredentials,
  type sendUnaryData,
  type ServerUnaryCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  AuthzServiceClient,
  AuthzServiceService,
  EvaluateRequest,
  type EvaluateResponse,
} from '../../../src/gen/authz/v1/authz.js';

export type AuthzMode =
  /** Ask the local policy service and pass its answer on. */
  | 'forward'
  /** Never answer (the gateway's `authz.timeout` must end the wait). */
  | 'hang'
  /** `allowed = true` followed by a truncated field: bytes that do not decode. */
  | 'garbage'
  /** A well-formed message of another type (an EvaluateRequest): field 1 with the wrong wire type. */
  | 'wrong-shape';

/** Answer bytes of the two garbage modes. */
const GARBAGE = Buffer.from([0x08, 0x01, 0x12, 0xff, 0xff]);
const WRONG_SHAPE = Buffer.from(
  EvaluateRequest.encode(
    EvaluateRequest.fromPartial({ token: 'not-a-response', action: 'ssh:exec', package: 'ssh' }),
  ).finish(),
);

export interface TestAuthz {
  /** host:port the gateway is configured with. */
  readonly address: string;
  /** Where `forward` sends calls (the local policy service); set from the stack's config. */
  target: string;
  mode: AuthzMode;
  /** Actions `mode` applies to; every other action is forwarded. Empty: every action. */
  readonly affects: Set<string>;
  /** Every request received, oldest first (tests clear it with `received.length = 0`). */
  readonly received: EvaluateRequest[];
  /** Calls held by `hang` and not answered yet. */
  hanging(): number;
  /** Stops listening: the service is down (connections refused). */
  down(): void;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): void;
}

async function bind(server: Server, address: string): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, ServerCredentials.createInsecure(), (e, port) =>
      e ? reject(e) : resolve(port),
    ),
  );
}

export async function startTestAuthz(): Promise<TestAuthz> {
  const held = new Set<sendUnaryData<unknown>>();
  let upstream: AuthzServiceClient | undefined;
  let upstreamFor = '';
  const client = (): AuthzServiceClient => {
    if (!upstream || upstreamFor !== t.target) {
      upstream?.close();
      upstream = new AuthzServiceClient(t.target, credentials.createInsecure());
      upstreamFor = t.target;
    }
    return upstream;
  };
  /** Marker answers: the serializer turns them into the raw bytes of the garbage modes. */
  const garbage = {};
  const wrongShape = {};

  const impl: UntypedServiceImplementation = {
    evaluate(call: ServerUnaryCall<EvaluateRequest, unknown>, cb: sendUnaryData<unknown>) {
      const req = call.request;
      t.received.push(req);
      const mode = t.affects.size === 0 || t.affects.has(req.action) ? t.mode : 'forward';
      if (mode === 'hang') {
        held.add(cb);
        call.on('cancelled', () => held.delete(cb));
        return;
      }
      if (mode === 'garbage') return cb(null, garbage);
      if (mode === 'wrong-shape') return cb(null, wrongShape);
      // The gateway's metadata (its service token) goes along: the local policy service checks it.
      client().evaluate(req, call.metadata, { deadline: Date.now() + 30_000 }, (err, res) => cb(err, res));
    },
  };
  const service = {
    evaluate: {
      ...AuthzServiceService.evaluate,
      responseSerialize: (v: EvaluateResponse): Buffer =>
        v === garbage
          ? GARBAGE
          : v === wrongShape
            ? WRONG_SHAPE
            : AuthzServiceService.evaluate.responseSerialize(v),
    },
  };
  const start = async (address: string): Promise<{ server: Server; port: number }> => {
    const server = new Server();
    server.addService(service, impl);
    return { server, port: await bind(server, address) };
  };

  let { server, port } = await start('127.0.0.1:0');
  const t: TestAuthz = {
    address: `127.0.0.1:${port}`,
    target: '',
    mode: 'forward',
    affects: new Set(),
    received: [],
    hanging: () => held.size,
    down() {
      server.forceShutdown();
      held.clear();
    },
    async up() {
      ({ server, port } = await start(`127.0.0.1:${port}`));
    },
    close() {
      server.forceShutdown();
      upstream?.close();
    },
  };
  return t;
}
