// sipcore test peer: one SIP.js user agent over WebSocket (the ws
// package) that calls, or is called by, a sipp user agent on UDP through
// sipcore; driven by tests/test_peers_mixed.py.
//
//   node mixed.mjs answer WS_URL DOMAIN USER
//     REGISTER USER; answer the first INVITE (180, then 200 with an SDP
//     answer), take its ACK and the caller's BYE (answered 200); then wait
//     for "quit" on stdin (the test writes it once the caller has its 200
//     for the BYE) and exit.
//
//   node mixed.mjs call WS_URL DOMAIN USER TARGET CALL_ID
//     REGISTER USER; INVITE TARGET (SDP offer) with Call-ID CALL_ID, take
//     180 and 200 (SIP.js ACKs it), hang up with BYE and exit.
//
// Every step is printed on stdout as one JSON object per line:
//   registered {user, status}
//   inviteReceived {hasSdp, recordRoute, via}          (answer)
//   ackReceived {via, route}, byeReceived {via, route}  (answer)
//   callEnded                                          (answer)
//   callEstablished {ringing, status, recordRoute}     (call)
//   byeAnswered {status}                               (call)
//   done
// Header lists are the header lines as received.  The script exits 0 when
// it ran to the end, 1 on any error or after DEADLINE_MS.

import * as readline from "node:readline";
import { Inviter, SessionState, UserAgent } from "sip.js";

import {
  emit,
  fail,
  finalStatus,
  makeAgent,
  register,
  startDeadline,
  waitFor,
} from "./agents.mjs";

const DEADLINE_MS = 30000;
const [mode, wsUrl, domain, user, target, callId] = process.argv.slice(2);

const deadline = startDeadline(DEADLINE_MS);

function finish() {
  clearTimeout(deadline);
  emit("done");
  process.exit(0);
}

async function waitForLine(wanted) {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === wanted) return;
  }
  throw new Error(`stdin closed before "${wanted}"`);
}

async function answer() {
  let ended;
  const callEnded = new Promise((resolve) => {
    ended = resolve;
  });
  let calls = 0;
  const agent = makeAgent(wsUrl, domain, user, {
    onInvite(invitation) {
      calls += 1;
      if (calls > 1) {
        invitation.reject({ statusCode: 486 });
        emit("error", { message: "a second INVITE" });
        return;
      }
      const request = invitation.request;
      emit("inviteReceived", {
        user,
        hasSdp: request.body.includes("m=audio"),
        recordRoute: request.getHeaders("record-route"),
        via: request.getHeaders("via"),
      });
      invitation.delegate = {
        onAck(ack) {
          emit("ackReceived", {
            via: ack.request.getHeaders("via"),
            route: ack.request.getHeaders("route"),
          });
        },
        onBye(bye) {
          emit("byeReceived", {
            via: bye.request.getHeaders("via"),
            route: bye.request.getHeaders("route"),
          });
          bye.accept();
        },
      };
      invitation.stateChange.addListener((state) => {
        if (state === SessionState.Terminated) {
          emit("callEnded", { user });
          ended();
        }
      });
      invitation
        .progress()
        .then(() => invitation.accept())
        .catch(fail);
    },
  });
  await register(agent, user);
  await callEnded;
  await waitForLine("quit");
  finish();
}

async function call() {
  const agent = makeAgent(wsUrl, domain, user, {});
  await register(agent, user);
  const uri = UserAgent.makeURI(target);
  if (!uri) throw new Error("bad target URI " + target);
  const inviter = new Inviter(agent, uri, { params: { callId } });
  const established = waitFor(inviter.stateChange, SessionState.Established);
  let ringing = false;
  let accepted;
  const answered = new Promise((resolve) => {
    accepted = resolve;
  });
  await inviter.invite({
    requestDelegate: {
      onProgress: (response) => {
        if (response.message.statusCode === 180) ringing = true;
      },
      onAccept: (response) => accepted(response.message),
      onReject: (response) => {
        emit("error", { message: "call rejected", status: response.message.statusCode });
        process.exit(1);
      },
    },
  });
  const ok = await answered;
  await established;
  // Established: the 2xx came and SIP.js ACKed it along its route set.
  emit("callEstablished", {
    user,
    ringing,
    status: ok.statusCode,
    callId: ok.callId,
    recordRoute: ok.getHeaders("record-route"),
  });
  const byeStatus = await finalStatus((requestDelegate) => inviter.bye({ requestDelegate }));
  emit("byeAnswered", { user, status: byeStatus });
  finish();
}

const modes = { answer, call };
if (!modes[mode]) fail(new Error("unknown mode " + mode));
else modes[mode]().catch(fail);
