// sipcore test peer: two SIP.js user agents over WebSocket (the ws
// package), driven by tests/test_peers_node.py.
//
//   node calls.mjs WS_URL DOMAIN ALICE BOB
//
// 1. alice and bob start and REGISTER over their own WebSocket;
// 2. alice sends bob a MESSAGE, bob receives and accepts it;
// 3. alice calls bob (INVITE with an SDP offer from a fake, media-less
//    session description handler), bob answers, alice hangs up (BYE);
// 4. bob's socket is destroyed without a WebSocket close;
// 5. after the test writes "go" on stdin (once the server saw the
//    connection go), alice calls bob again and reports the final status.
//
// Every step is printed on stdout as one JSON object per line.  The script
// exits 0 when it ran to the end, 1 on any error or after DEADLINE_MS.

import * as readline from "node:readline";
import { Inviter, Messager, SessionState, UserAgent } from "sip.js";

import { emit, fail, makeAgent, register, startDeadline, waitFor } from "./agents.mjs";

const DEADLINE_MS = 40000;
const [wsUrl, domain, aliceName, bobName] = process.argv.slice(2);

const deadline = startDeadline(DEADLINE_MS);

// Resolves with the final status of an INVITE that bob cannot take.
function callUnreachable(alice, target) {
  return new Promise((resolve, reject) => {
    const inviter = new Inviter(alice, target);
    inviter
      .invite({
        requestDelegate: {
          onAccept: (response) => resolve(response.message.statusCode),
          onReject: (response) => resolve(response.message.statusCode),
        },
      })
      .catch(reject);
  });
}

async function main() {
  const bobSessions = [];
  let messageResolve;
  const messageReceived = new Promise((resolve) => {
    messageResolve = resolve;
  });
  let byeResolve;
  const bobHungUp = new Promise((resolve) => {
    byeResolve = resolve;
  });

  const alice = makeAgent(wsUrl, domain, aliceName, {});
  const bob = makeAgent(wsUrl, domain, bobName, {
    onMessage(message) {
      const body = message.request.body;
      message.accept();
      emit("messageReceived", { user: bobName, body, from: message.request.from.uri.user });
      messageResolve(body);
    },
    onInvite(invitation) {
      bobSessions.push(invitation);
      emit("inviteReceived", {
        user: bobName,
        hasSdp: invitation.request.body.includes("m=audio"),
        recordRoute: invitation.request.getHeaders("record-route"),
      });
      invitation.stateChange.addListener((state) => {
        if (state === SessionState.Terminated) {
          emit("callEnded", { user: bobName });
          byeResolve();
        }
      });
      invitation.progress().then(() => invitation.accept());
    },
  });

  await register(alice, aliceName);
  await register(bob, bobName);

  const target = UserAgent.makeURI(`sip:${bobName}@${domain}`);

  // MESSAGE alice -> bob
  const messageStatus = await new Promise((resolve, reject) => {
    new Messager(alice, target, "hello " + bobName)
      .message({
        requestDelegate: {
          onAccept: (response) => resolve(response.message.statusCode),
          onReject: (response) => resolve(response.message.statusCode),
        },
      })
      .catch(reject);
  });
  emit("messageSent", { user: aliceName, status: messageStatus });
  await messageReceived;

  // INVITE alice -> bob, answered, then BYE from alice
  const inviter = new Inviter(alice, target);
  const established = waitFor(inviter.stateChange, SessionState.Established);
  let ringing = false;
  await inviter.invite({
    requestDelegate: {
      onProgress: (response) => {
        if (response.message.statusCode === 180) ringing = true;
      },
      onReject: (response) => {
        emit("error", { message: "call rejected", status: response.message.statusCode });
        process.exit(1);
      },
    },
  });
  await established;
  // Established: the 2xx came and SIP.js ACKed it.
  emit("callEstablished", { user: aliceName, ringing });
  const byeStatus = await new Promise((resolve, reject) => {
    inviter
      .bye({
        requestDelegate: {
          onAccept: (response) => resolve(response.message.statusCode),
          onReject: (response) => resolve(response.message.statusCode),
        },
      })
      .catch(reject);
  });
  emit("byeAnswered", { user: aliceName, status: byeStatus });
  await bobHungUp;

  // bob's socket dies without a WebSocket close frame
  bob.transport.ws.terminate();
  emit("dropped", { user: bobName });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === "go") break;
  }
  const status = await callUnreachable(alice, target);
  emit("unreachableCall", { user: aliceName, status });

  clearTimeout(deadline);
  emit("done");
  process.exit(0);
}

main().catch(fail);
