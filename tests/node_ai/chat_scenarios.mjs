// The Vercel AI SDK (npm `ai`) against `sluiceway serve`: run by tests/test_ai_sdk_node.py.
//
//   node chat_scenarios.mjs <base url> <scenario> <chat id> [options JSON]
//
// The SDK package comes from $AI_PACKAGE ("ai", the pinned 6.x, or "ai5", the pinned 5.x).
// Each scenario prints exactly one line of JSON: what the SDK assembled (text, parts, ids,
// metadata), the chunk types it validated and received, and any error the SDK raised, as its
// Error.message. Chunks are validated by the SDK itself: DefaultChatTransport parses the stream
// with its uiMessageChunkSchema and fails on the first chunk that does not match.

const ai = await import(process.env.AI_PACKAGE || "ai");
const { AbstractChat, DefaultChatTransport, readUIMessageStream } = ai;

const [base, scenario, chatId, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || "{}");
const api = `${base}/api/chat`;
const userMessage = {
  id: "u1",
  role: "user",
  parts: [{ type: "text", text: options.prompt ?? "Say hello" }],
};

function textOf(message) {
  return (message?.parts ?? [])
    .filter((part) => part.type === "text")
    .map((part) => part.text)
    .join("");
}

function describe(message) {
  if (message == null) return null;
  return { id: message.id, role: message.role, metadata: message.metadata ?? null, parts: message.parts };
}

// Reads a transport stream with readUIMessageStream (which reports an `error` chunk as an
// error of the iteration with terminateOnError), recording the chunk types on the way.
async function assemble(stream, { stopAfterChars } = {}) {
  const types = [];
  const chunks = [];
  const recorded = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        types.push(chunk.type);
        if (chunk.type === "finish" || chunk.type === "start" || chunk.type.startsWith("data-")) {
          chunks.push(chunk);
        }
        controller.enqueue(chunk);
      },
    }),
  );
  let last = null;
  let error = null;
  let stopped = false;
  try {
    for await (const message of readUIMessageStream({ stream: recorded, terminateOnError: true })) {
      last = message;
      if (stopAfterChars != null && textOf(message).length >= stopAfterChars) {
        stopped = true;
        break;
      }
    }
  } catch (err) {
    error = String(err?.message ?? err);
  }
  return { text: textOf(last), message: describe(last), types, chunks, error, stopped };
}

async function send(transport, abortSignal) {
  return transport.sendMessages({
    chatId,
    messages: [userMessage],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
    body: options.body,
  });
}

// A ChatState kept in plain memory: what useChat keeps in React state.
class MemoryState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = (value) => structuredClone(value);
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new MemoryState(messages) });
  }
}

function chatResult(chat, finishes) {
  const last = chat.messages.at(-1);
  return {
    status: chat.status,
    error: chat.error ? String(chat.error.message) : null,
    roles: chat.messages.map((message) => message.role),
    text: last?.role === "assistant" ? textOf(last) : null,
    message: last?.role === "assistant" ? describe(last) : null,
    finishes,
  };
}

const scenarios = {
  // sendMessages + readUIMessageStream: one answer, assembled.
  async send() {
    let stream;
    try {
      stream = await send(new DefaultChatTransport({ api }));
    } catch (err) {
      return { phase: "send", error: String(err?.message ?? err) };
    }
    return { phase: "stream", ...(await assemble(stream)) };
  },

  // reconnectToStream: null (the server said 204) or the answer from its start.
  async reconnect() {
    const stream = await new DefaultChatTransport({ api }).reconnectToStream({ chatId });
    if (stream == null) return { none: true };
    return { none: false, ...(await assemble(stream)) };
  },

  // Read part of an answer, drop the connection (the SDK's abort), then reconnect.
  async interrupt() {
    const transport = new DefaultChatTransport({ api });
    const controller = new AbortController();
    const first = await assemble(await send(transport, controller.signal), {
      stopAfterChars: options.stopAfterChars ?? 1,
    });
    controller.abort();
    const stream = await transport.reconnectToStream({ chatId });
    const again = stream == null ? null : await assemble(stream);
    return { partial: first, resumed: again };
  },

  // The framework-neutral core of useChat (AbstractChat): send, then a resume of the same chat
  // in a fresh Chat (a page reload with `resume: true`).
  async chat() {
    const finishes = [];
    const onFinish = ({ message, isAbort, isError, isDisconnect, finishReason }) =>
      finishes.push({ text: textOf(message), isAbort, isError, isDisconnect, finishReason: finishReason ?? null });
    const chat = new Chat({ id: chatId, transport: new DefaultChatTransport({ api }), onFinish });
    await chat.sendMessage({ text: userMessage.parts[0].text });
    const sent = chatResult(chat, finishes.splice(0));
    const reloaded = new Chat({
      id: chatId,
      transport: new DefaultChatTransport({ api }),
      messages: structuredClone(chat.messages),
      onFinish,
    });
    await reloaded.resumeStream();
    return { sent, reloaded: chatResult(reloaded, finishes) };
  },

  // useChat's stop() mid-answer (for the SDK a disconnect: the generation goes on), then
  // resumeStream(), which replays the answer from its start into the same message.
  async "chat-stop-resume"() {
    const finishes = [];
    const onFinish = ({ message, isAbort, isError, isDisconnect }) =>
      finishes.push({ text: textOf(message), isAbort, isError, isDisconnect });
    const chat = new Chat({ id: chatId, transport: new DefaultChatTransport({ api }), onFinish });
    const sending = chat.sendMessage({ text: userMessage.parts[0].text });
    const answered = () => {
      const last = chat.messages.at(-1);
      return last?.role === "assistant" && textOf(last).length >= (options.stopAfterChars ?? 1);
    };
    const deadline = Date.now() + 10_000;
    while (!answered()) {
      if (Date.now() > deadline) throw new Error("no text within 10 s");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await chat.stop();
    await sending;
    const stopped = chatResult(chat, finishes.splice(0));
    await chat.resumeStream();
    return { stopped, resumed: chatResult(chat, finishes) };
  },
};

const run = scenarios[scenario];
if (run == null) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
const result = await run();
console.log(JSON.stringify({ scenario, package: process.env.AI_PACKAGE || "ai", ...result }));
