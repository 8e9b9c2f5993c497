// JetStream key-value buckets of the gateway (reference-behaviour §17.1, §23.k): existing buckets are
// opened as they are; a missing bucket is created with history 1, file storage, no TTL and never more
// replicas than the NATS deployment has (1 on a single server, at most 3), so a single-server NATS
// never sees a 3-replica request.
import type { NatsConnection, ServerInfo } from '@nats-io/transport-node';
import { jetstream, JetStreamApiCodes, JetStreamApiError, StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';

export const LOCKED_USERS_BUCKET = 'locked-users';
export const RECORDING_OVERRIDES_BUCKET = 'recording-overrides';
/** The reference's replica count for buckets it creates; ours is capped by the deployment's size. */
export const MAX_BUCKET_REPLICAS = 3;

export function streamName(bucket: string): string {
  return `KV_${bucket}`;
}

/**
 * Replicas for a bucket we create: a server that is not part of a cluster (its INFO has no `cluster`)
 * holds 1; in a cluster, the number of servers it advertises to clients (`connect_urls`, which lists
 * every member including itself), capped at 3. A cluster that advertises nothing (`no_advertise`)
 * gets 1: safe everywhere, and the operator can create a replicated bucket beforehand.
 */
export function bucketReplicas(info: Pick<ServerInfo, 'cluster' | 'connect_urls'> | undefined): number {
  if (!info?.cluster) return 1;
  const members = new Set(info.connect_urls ?? []).size;
  return Math.max(1, Math.min(MAX_BUCKET_REPLICAS, members));
}

export function isStreamNotFound(e: unknown): boolean {
  return e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound;
}

export interface OpenedBucket {
  kv: KV;
  /** True when this call created the bucket. */
  created: boolean;
  replicas: number;
}

/**
 * Opens `bucket`, creating it when missing (see the file comment). `timeoutMs` bounds each JetStream
 * API request. Throws the JetStream error on failure.
 */
export async function openOrCreateBucket(
  nc: NatsConnection,
  bucket: string,
  timeoutMs: number,
): Promise<OpenedBucket> {
  const js = jetstream(nc, { timeout: timeoutMs });
  const jsm = await js.jetstreamManager();
  const kvm = new Kvm(js);
  try {
    const info = await jsm.streams.info(streamName(bucket));
    // Bind to the stream as configured; `allow_direct` decides how reads are made.
    const kv = await kvm.open(bucket, { allow_direct: info.config.allow_direct === true });
    return { kv, created: false, replicas: info.config.num_replicas };
  } catch (e) {
    if (!isStreamNotFound(e)) throw e;
  }
  const replicas = bucketReplicas(nc.info);
  // Kvm.create opens the bucket instead when another process created it meanwhile.
  const kv = await kvm.create(bucket, { history: 1, storage: StorageType.File, replicas, ttl: 0 });
  const status = await kv.status();
  return { kv, created: true, replicas: status.replicas };
}
