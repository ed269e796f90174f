// The official client as the oracle of the gateway's Realtime: supabase-js
// subscribes to a workspace's private channel exactly as an app would,
// receives the broadcast of a push made from Rust, is refused as a
// non-member, with an expired and with a forged token (Realtime's error shape), and two
// supabase-js clients see each other's presence (and a Rust client's).
// Input (env SUPAMERGE_JS_INPUT): {"url","anonKey","workspace",
// "member","outsider","expired","forged","other"} (tokens). Output: JSON lines on
// stdout: {"ready":...} once subscribed, then {"done":...}. Driven by
// tests/realtime_js.rs.
import { createClient } from '@supabase/supabase-js';
// Node < 22 has no global WebSocket: hand supabase-js the `ws` package.
import WebSocket from 'ws';

const input = JSON.parse(process.env.SUPAMERGE_JS_INPUT ?? '{}');
const topic = `workspace:${input.workspace}`;
const client = () =>
  createClient(input.url, input.anonKey, {
    realtime: { transport: WebSocket },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

// Resolves with the subscribe status (and the error's message).
const subscribe = (channel) =>
  new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED' || status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
        resolve({ status, error: err ? String(err.message) : null });
      }
    });
  });

// 1. A member listens for the push's broadcast.
const member = client();
await member.realtime.setAuth(input.member);
let gotBroadcast;
const broadcast = new Promise((resolve) => (gotBroadcast = resolve));
const memberChannel = member
  .channel(topic, { config: { private: true } })
  .on('broadcast', { event: 'changes' }, (msg) => gotBroadcast(msg));
const memberStatus = await subscribe(memberChannel);

// 2. Refused joins: a non-member, an expired token.
const refusals = {};
for (const [name, token] of [['outsider', input.outsider], ['expired', input.expired], ['forged', input.forged]]) {
  const c = client();
  await c.realtime.setAuth(token);
  const ch = c.channel(topic, { config: { private: true } });
  refusals[name] = await subscribe(ch);
  await c.removeAllChannels();
}

// 3. Presence: two supabase-js clients (and the Rust one the test adds).
const presenceOf = async (token, key, meta) => {
  const c = client();
  await c.realtime.setAuth(token);
  const ch = c.channel(topic, { config: { private: true, presence: { key } } });
  ch.on('presence', { event: 'sync' }, () => {});
  const st = await subscribe(ch);
  if (st.status === 'SUBSCRIBED') await ch.track(meta);
  return { c, ch, st };
};
const ann = await presenceOf(input.member, 'js-ann', { name: 'Ann (js)' });
const bob = await presenceOf(input.other, 'js-bob', { name: 'Bob (js)' });

say({ ready: true, member: memberStatus, refusals, presence: [ann.st, bob.st] });

// Waits (bounded by the Rust test's guard) for the broadcast and for Ann
// to see Bob and the Rust client.
const received = await broadcast;
const seen = await new Promise((resolve) => {
  const check = () => {
    const state = ann.ch.presenceState();
    if (state['js-bob'] && state['rust']) resolve(state);
  };
  check();
  setInterval(check, 100);
});
say({ done: true, broadcast: received, presence: seen });
process.exit(0);
