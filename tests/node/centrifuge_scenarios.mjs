// The official centrifuge-js client (npm "centrifuge") against `sluiceway serve`.
//
//   node centrifuge_scenarios.mjs <base-url> <scenario> <channel> [count] [json|protobuf]
//
// Connects anonymously to <base-url>/connection/websocket (Centrifugo's JSON protocol, or with
// "protobuf" the SDK's Protobuf build, which sends and receives data as bytes: this script
// encodes and decodes them as UTF-8 JSON, so that both encodings print the same), runs one
// scenario, prints ONE line of JSON on stdout and exits 0; on failure the error goes to stderr
// and the exit status is 1. Publications made over HTTP go through `POST <base>/topics/<channel>`
// with {"data": {"seq": i}}. Run by tests/test_centrifugo_node.py, which asserts on the output.
//
//   roundtrip  subscribe; publish {seq: 0} from this client (the channel must be publish-allowed),
//              then <count> over HTTP: prints the data received, in order.
//   denied     publish from this client to <channel> (NOT publish-allowed): prints the error.
//   recover    receive <count> publications, kill the WebSocket (the SDK reconnects and
//              resubscribes with recovery), publish <count> more over HTTP while it is down and
//              <count> after. Then a second client subscribes with `since` the position after
//              the first <count>, and a third with `since` a position in an unknown epoch.
//   history    <count> publications over HTTP, then sub.history() in several forms, presence and
//              presence stats (with a second client subscribed too).
//   filtered   subscribe with a tags filter (ticker == AAPL); <count> publications over HTTP,
//              tagged AAPL and MSFT in turn: prints what arrived and its tags.
//   realtime   subscribe with joinLeave and fossil deltas; a second client subscribes and leaves;
//              <count> big states published over HTTP (each a small change); an rpc the server
//              has no handler for: prints what arrived, the joins/leaves and delta stats.

import WebSocket from 'ws';

const [base, scenario, channel, countArg, encoding = 'json'] = process.argv.slice(2);
const protobuf = encoding === 'protobuf';
const { Centrifuge } = await import(protobuf ? 'centrifuge/build/protobuf' : 'centrifuge');
/** Data as the SDK takes it: JSON values, or their UTF-8 JSON bytes in Protobuf. */
const encode = (value) => (protobuf ? new TextEncoder().encode(JSON.stringify(value)) : value);
/** Data as the SDK gives it, back to a JSON value. */
const decode = (data) => (protobuf ? JSON.parse(new TextDecoder().decode(data)) : data);
const count = Number(countArg ?? 5);
const wsUrl = base.replace(/^http/, 'ws') + '/connection/websocket';
const TIMEOUT_MS = 10_000;

function newClient(options = {}) {
  return new Centrifuge(wsUrl, {
    websocket: WebSocket, // Node 20 has no global WebSocket
    minReconnectDelay: 300,
    maxReconnectDelay: 300,
    debug: Boolean(process.env.CENTRIFUGE_DEBUG),
    ...options,
  });
}

function withTimeout(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the next `event` emitted by `emitter` (a client or a subscription). */
function once(emitter, event) {
  return withTimeout(new Promise((resolve) => emitter.once(event, resolve)), event);
}

async function httpPublish(data, tags = undefined) {
  const response = await fetch(`${base}/topics/${encodeURIComponent(channel)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(tags ? { data, tags } : { data }),
  });
  const body = await response.text();
  if (!response.ok) throw new Error(`POST /topics/${channel}: ${response.status} ${body}`);
  return JSON.parse(body);
}

/** Subscribes and records every publication; `waitFor(n)` resolves once n have arrived. */
function collect(sub) {
  const received = [];
  const offsets = [];
  const waiters = [];
  sub.on('publication', (ctx) => {
    received.push(decode(ctx.data));
    offsets.push(ctx.offset ?? null);
    for (const w of waiters.filter((w) => received.length >= w.n)) w.resolve();
  });
  const waitFor = (n) =>
    withTimeout(
      new Promise((resolve) => {
        if (received.length >= n) resolve();
        else waiters.push({ n, resolve });
      }),
      `${n} publications (got ${JSON.stringify(received)})`,
    );
  return { received, offsets, waitFor };
}

function subscribedInfo(ctx) {
  const { recoverable, positioned, wasRecovering, recovered } = ctx;
  const { hasRecoveredPublications, streamPosition } = ctx;
  return {
    recoverable,
    positioned,
    wasRecovering,
    recovered,
    hasRecoveredPublications,
    streamPosition,
  };
}

async function connected(client) {
  const ready = once(client, 'connected');
  client.connect();
  return ready;
}

async function roundtrip() {
  const client = newClient();
  await connected(client);
  const sub = client.newSubscription(channel);
  const got = collect(sub);
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  const ctx = await subscribed;
  await sub.publish(encode({ seq: 0, from: 'js' }));
  await got.waitFor(1); // our own publication, back over the subscription
  const ids = [];
  for (let seq = 1; seq <= count; seq++) ids.push((await httpPublish({ seq, from: 'http' })).id);
  await got.waitFor(count + 1);
  client.disconnect();
  return { subscribed: subscribedInfo(ctx), received: got.received, offsets: got.offsets, ids };
}

async function denied() {
  const client = newClient();
  await connected(client);
  try {
    await client.publish(channel, encode({ seq: 0 }));
    return { published: true };
  } catch (err) {
    return { published: false, error: { code: err.code, message: err.message } };
  } finally {
    client.disconnect();
  }
}

async function recover() {
  const client = newClient();
  await connected(client);
  const sub = client.newSubscription(channel, { recoverable: true });
  const got = collect(sub);
  const contexts = [];
  sub.on('subscribed', (ctx) => contexts.push(subscribedInfo(ctx)));
  const firstSubscribed = once(sub, 'subscribed');
  sub.subscribe();
  await firstSubscribed;
  for (let seq = 1; seq <= count; seq++) await httpPublish({ seq });
  await got.waitFor(count);
  const positionAfterFirst = {
    offset: got.offsets.at(-1),
    epoch: contexts[0].streamPosition?.epoch,
  };

  // Kill the socket under the SDK (client._transport wraps the `ws` WebSocket): to the SDK this
  // is a lost connection, so it reconnects after minReconnectDelay and resubscribes recovering.
  const connecting = once(client, 'connecting');
  client._transport._transport.terminate();
  const disconnect = await connecting;
  for (let seq = count + 1; seq <= 2 * count; seq++) await httpPublish({ seq }); // while it is down
  await once(sub, 'subscribed');
  for (let seq = 2 * count + 1; seq <= 3 * count; seq++) await httpPublish({ seq });
  await got.waitFor(3 * count);

  // A second client asks for everything after the first `count`, by position (`since`).
  const late = newClient();
  await connected(late);
  const lateSub = late.newSubscription(channel, { since: positionAfterFirst });
  const lateGot = collect(lateSub);
  const lateSubscribed = once(lateSub, 'subscribed');
  lateSub.subscribe();
  const lateCtx = await lateSubscribed;
  await lateGot.waitFor(2 * count);

  // And a third from a position in a history that is not this one: an explicit failure.
  const third = newClient();
  await connected(third);
  const bogus = third.newSubscription(channel, { since: { offset: 1, epoch: 'nosuchepoch' } });
  const bogusGot = collect(bogus);
  const bogusSubscribed = once(bogus, 'subscribed');
  bogus.subscribe();
  const bogusCtx = await bogusSubscribed;
  await new Promise((resolve) => setTimeout(resolve, 200)); // room for unwanted extras
  for (const c of [client, late, third]) c.disconnect();
  return {
    disconnect,
    subscribed: contexts,
    received: got.received,
    offsets: got.offsets,
    since: positionAfterFirst,
    sinceSubscribed: subscribedInfo(lateCtx),
    sinceReceived: lateGot.received,
    bogusSubscribed: subscribedInfo(bogusCtx),
    bogusReceived: bogusGot.received,
  };
}

async function history() {
  const ids = [];
  for (let seq = 1; seq <= count; seq++) ids.push((await httpPublish({ seq })).id);
  const client = newClient();
  await connected(client);
  const sub = client.newSubscription(channel);
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  await subscribed;
  const other = newClient();
  await connected(other);
  const otherSub = other.newSubscription(channel);
  const otherSubscribed = once(otherSub, 'subscribed');
  otherSub.subscribe();
  await otherSubscribed;

  const brief = (h) => ({
    data: h.publications.map((p) => decode(p.data)),
    offsets: h.publications.map((p) => p.offset),
    offset: h.offset,
    epoch: h.epoch,
  });
  const top = await sub.history({ limit: 0 });
  const all = await sub.history({ limit: -1 });
  const firstTwo = await sub.history({ limit: 2 });
  const lastTwo = await sub.history({ limit: 2, reverse: true });
  const afterFirst = all.publications[0];
  const since = await sub.history({
    limit: -1,
    since: { offset: afterFirst.offset, epoch: all.epoch },
  });
  const presence = await sub.presence();
  const presenceStats = await client.presenceStats(channel);
  const result = {
    ids,
    top: brief(top),
    all: brief(all),
    firstTwo: brief(firstTwo),
    lastTwo: brief(lastTwo),
    since: brief(since),
    presenceClients: Object.values(presence.clients).map((c) => c.client).sort(),
    clientIds: [client._client, other._client].sort(),
    presenceStats,
  };
  client.disconnect();
  other.disconnect();
  return result;
}

async function realtime() {
  // Deltas and joins/leaves on one subscription; another client comes and goes; the states
  // published over HTTP are big and change a little each time.
  const client = newClient();
  await connected(client);
  const sub = client.newSubscription(channel, { joinLeave: true, delta: 'fossil' });
  const got = collect(sub);
  const joins = [];
  const leaves = [];
  sub.on('join', (ctx) => joins.push(ctx.info.client));
  sub.on('leave', (ctx) => leaves.push(ctx.info.client));
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  await subscribed;

  const other = newClient();
  await connected(other);
  const otherSub = other.newSubscription(channel);
  const otherSubscribed = once(otherSub, 'subscribed');
  otherSub.subscribe();
  await otherSubscribed;
  const otherId = other._client; // cleared on disconnect
  other.disconnect();

  const readings = Array.from({ length: 60 }, (_, i) => ({ sensor: i, value: i * 1.5 }));
  for (let seq = 1; seq <= count; seq++) {
    readings[seq % readings.length].value = seq;
    await httpPublish({ seq, readings });
  }
  await got.waitFor(count);
  await withTimeout(
    (async () => {
      while (leaves.length < 1) await new Promise((resolve) => setTimeout(resolve, 20));
    })(),
    'a leave',
  );
  let rpcError = null;
  try {
    await client.rpc('nothing.here', encode({}));
  } catch (err) {
    rpcError = { code: err.code };
  }
  const stats = sub.deltaStats();
  client.disconnect();
  return {
    received: got.received.map((data) => data.seq),
    lastReadings: got.received.at(-1).readings,
    expectedReadings: readings,
    joins: joins.length,
    leaves: leaves.length,
    otherLeft: leaves.includes(otherId),
    numDelta: stats.numDeltaPayloads,
    compression: stats.compressionRatio,
    rpcError,
  };
}

async function filtered() {
  // A tags filter: only AAPL, among <count> publications of two tickers.
  const client = newClient();
  await connected(client);
  const sub = client.newSubscription(channel, {
    tagsFilter: { key: 'ticker', cmp: 'eq', val: 'AAPL' },
  });
  const got = collect(sub);
  const tags = [];
  sub.on('publication', (ctx) => tags.push(ctx.tags));
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  await subscribed;
  for (let seq = 1; seq <= count; seq++) {
    await httpPublish({ seq }, { ticker: seq % 2 ? 'AAPL' : 'MSFT' });
  }
  const wanted = Math.ceil(count / 2);
  await got.waitFor(wanted);
  await new Promise((resolve) => setTimeout(resolve, 200)); // room for what must not come
  client.disconnect();
  return { received: got.received.map((data) => data.seq), tags };
}

const scenarios = { roundtrip, denied, recover, history, realtime, filtered };

try {
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
  const result = await withTimeout(scenarios[scenario](), scenario, 30_000);
  process.stdout.write(JSON.stringify({ scenario, ...result }) + '\n');
  process.exit(0);
} catch (err) {
  // centrifuge-js rejects with plain {code, message} objects, not Errors.
  const text = err instanceof Error ? err.stack : JSON.stringify(err);
  process.stderr.write(`${scenario} failed: ${text}\n`);
  process.exit(1);
}
