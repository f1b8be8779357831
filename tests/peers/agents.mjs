// sipcore test peers: what the SIP.js scripts (calls.mjs, mixed.mjs)
// share: JSON-line events on stdout, a deadline, a media-less session
// description handler, and user agents that register over WebSocket.

import WebSocket from "ws";
import { Registerer, UserAgent } from "sip.js";

// SIP.js's WebSocket transport uses the global WebSocket, which Node 20
// does not have.
globalThis.WebSocket = WebSocket;

// Print one event as one JSON object on its own line.
export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

// Exit 1 after `ms` milliseconds; returns the timer (clear it when done).
export function startDeadline(ms) {
  return setTimeout(() => {
    emit("error", { message: "deadline passed" });
    process.exit(1);
  }, ms);
}

// Report an error and exit 1: for main().catch().
export function fail(error) {
  emit("error", { message: String(error && error.stack ? error.stack : error) });
  process.exit(1);
}

export const SDP = [
  "v=0",
  "o=- 1 1 IN IP4 127.0.0.1",
  "s=-",
  "c=IN IP4 127.0.0.1",
  "t=0 0",
  "m=audio 9 RTP/AVP 0",
  "a=inactive",
  "",
].join("\r\n");

// A session description handler without WebRTC: it offers and answers a
// fixed inactive audio stream and accepts any remote description.
export class FakeSessionDescriptionHandler {
  constructor() {
    this.remote = undefined;
  }
  getDescription() {
    return Promise.resolve({ body: SDP, contentType: "application/sdp" });
  }
  hasDescription(contentType) {
    return contentType === "application/sdp";
  }
  setDescription(sdp) {
    this.remote = sdp;
    return Promise.resolve();
  }
  rollbackDescription() {
    return Promise.resolve();
  }
  sendDtmf() {
    return false;
  }
  close() {}
}

// A user agent sip:NAME@DOMAIN whose transport is a WebSocket to wsUrl.
// With SIPCORE_PEER_PASSWORD set, the agent answers digest challenges as
// `name` with that password.
export function makeAgent(wsUrl, domain, name, delegate) {
  const password = process.env.SIPCORE_PEER_PASSWORD;
  return new UserAgent({
    uri: UserAgent.makeURI(`sip:${name}@${domain}`),
    transportOptions: { server: wsUrl },
    ...(password ? { authorizationUsername: name, authorizationPassword: password } : {}),
    sessionDescriptionHandlerFactory: () => new FakeSessionDescriptionHandler(),
    logLevel: "error",
    logBuiltinEnabled: false,
    delegate,
  });
}

// Resolves when `emitter` (a SIP.js state emitter) reaches `wanted`.
export function waitFor(emitter, wanted) {
  return new Promise((resolve) => {
    const listener = (state) => {
      if (state === wanted) {
        emitter.removeListener(listener);
        resolve(state);
      }
    };
    emitter.addListener(listener);
  });
}

// Start `agent`, REGISTER it and emit "registered" with the final status.
export async function register(agent, name) {
  await agent.start();
  const registerer = new Registerer(agent, { expires: 300 });
  const status = await new Promise((resolve, reject) => {
    registerer
      .register({
        requestDelegate: {
          onAccept: (response) => resolve(response.message.statusCode),
          onReject: (response) => resolve(response.message.statusCode),
        },
      })
      .catch(reject);
  });
  emit("registered", { user: name, status });
  return registerer;
}

// Resolves with the final status of a request sent with a requestDelegate:
// `send` gets the delegate and returns the SIP.js promise of the send.
export function finalStatus(send) {
  return new Promise((resolve, reject) => {
    send({
      onAccept: (response) => resolve(response.message.statusCode),
      onReject: (response) => resolve(response.message.statusCode),
    }).catch(reject);
  });
}
