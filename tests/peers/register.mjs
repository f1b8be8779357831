// sipcore test peer: one user agent registers over WebSocket and stays
// registered until its standard input closes (or SIGTERM); then it exits
// without unregistering, so its connection just closes.
//
//   node register.mjs LIBRARY WS_URL DOMAIN USER
//
// LIBRARY is "sipjs" (SIP.js) or "jssip" (JsSIP).  With
// SIPCORE_PEER_PASSWORD set the agent answers digest challenges as USER.
// Prints JSON lines: {"event": "registered", "user", "status"} (status is
// the final response's code, or 0 when none came), then {"event":
// "stopped"} just before it exits.

import JsSIP from "jssip";
import { emit, fail, makeAgent, register, startDeadline } from "./agents.mjs";

const [library, wsUrl, domain, user] = process.argv.slice(2);
const deadline = startDeadline(120000);

// Resolves when standard input ends (the test closes it) or on SIGTERM.
function untilTold() {
  return new Promise((resolve) => {
    process.stdin.on("end", resolve);
    process.stdin.on("close", resolve);
    process.on("SIGTERM", resolve);
    process.stdin.resume();
  });
}

async function sipjs() {
  const agent = makeAgent(wsUrl, domain, user, {});
  await register(agent, user);
}

async function jssip() {
  const password = process.env.SIPCORE_PEER_PASSWORD;
  const agent = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(wsUrl)],
    uri: `sip:${user}@${domain}`,
    ...(password ? { authorization_user: user, password } : {}),
    register: true,
    register_expires: 300,
    session_timers: false,
    user_agent: "JsSIP " + JsSIP.version,
  });
  const status = new Promise((resolve) => {
    agent.on("registered", (e) => resolve(e.response.status_code));
    agent.on("registrationFailed", (e) => resolve(e.response ? e.response.status_code : 0));
  });
  agent.start();
  emit("registered", { user, status: await status });
}

async function main() {
  if (library === "sipjs") {
    await sipjs();
  } else if (library === "jssip") {
    await jssip();
  } else {
    throw new Error("unknown library " + library);
  }
  await untilTold();
  clearTimeout(deadline);
  emit("stopped");
  process.exit(0);
}

main().catch(fail);
