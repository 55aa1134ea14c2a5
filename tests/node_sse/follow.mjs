// Follows one SSE stream until `count` "message" events came (or `timeoutMs` passed), with
// npm's `eventsource` or with sluiceway.js's EventStream. Prints "open" once its first
// connection opened, then what it received as one JSON line: {received: [[lastEventId, data],
// ...], opens, errors}.
//
//   node follow.mjs eventsource|sluiceway.js <url> <count> <timeoutMs>
import { EventSource } from "eventsource";

import { EventStream } from "../../src/sluiceway/web/sluiceway.js";

const [client, url, count, timeoutMs] = process.argv.slice(2);
const received = [];
let opens = 0;
let errors = 0;

const source = client === "eventsource" ? new EventSource(url) : new EventStream(url);
source.addEventListener("open", () => {
  if (opens++ === 0) process.stdout.write("open\n");
});
// sluiceway.js says "reconnecting" after a cut; EventSource says "error".
source.addEventListener(client === "eventsource" ? "error" : "reconnecting", () => errors++);

await new Promise((resolve) => {
  const timer = setTimeout(resolve, Number(timeoutMs));
  source.addEventListener("message", (event) => {
    received.push([event.lastEventId, event.data]);
    if (received.length >= Number(count)) {
      clearTimeout(timer);
      resolve();
    }
  });
});
source.close();
process.stdout.write(JSON.stringify({ received, opens, errors }) + "\n");
