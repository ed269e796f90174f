// Calls supamerge's RPC functions through the gateway with the official
// Supabase client, exactly as an app would, and prints the results as JSON.
// Input (env SUPAMERGE_JS_INPUT): {"url","anonKey","token","workspace","foreign","changes"}.
import { createClient } from '@supabase/supabase-js';
// supabase-js builds a Realtime client eagerly; Node < 22 has no global WebSocket.
import WebSocket from 'ws';

const input = JSON.parse(process.env.SUPAMERGE_JS_INPUT ?? '{}');
const realtime = { transport: WebSocket };
const supabase = createClient(input.url, input.anonKey, {
  realtime,
  global: { headers: { Authorization: `Bearer ${input.token}` } },
  auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
});
const anonOnly = createClient(input.url, input.anonKey, {
  realtime,
  auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
});

const pick = ({ data, error, status }) => ({ data, error, status });

const push = await supabase.rpc('supamerge_push', {
  p_workspace: input.workspace,
  p_changes: input.changes,
});
const pull = await supabase.rpc('supamerge_pull', {
  p_workspace: input.workspace,
  p_cursor: '',
  p_limit: 100,
});
const foreign = await supabase.rpc('supamerge_pull', {
  p_workspace: input.foreign,
  p_cursor: '',
  p_limit: 100,
});
const anon = await anonOnly.rpc('supamerge_pull', {
  p_workspace: input.workspace,
  p_cursor: '',
  p_limit: 100,
});

console.log(JSON.stringify({
  push: pick(push),
  pull: pick(pull),
  foreign: pick(foreign),
  anon: pick(anon),
}));
