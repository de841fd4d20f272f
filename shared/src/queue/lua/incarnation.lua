-- Prepended to enqueue.lua and fetch.lua (client.rs): the server's incarnation, its run_id
-- (new at every start) and master_replid (new at every promotion), or '' when INFO is denied
-- (an ACL) or its reply has no such ids. enqueue.lua records it on every new job; fetch.lua
-- returns it with the jobs it leases, and the worker treats a job from another incarnation as
-- suspect (its history is read from the ledger before it runs).
local function incarnation()
  local ok_server, server = pcall(redis.call, 'INFO', 'server')
  local ok_repl, repl = pcall(redis.call, 'INFO', 'replication')
  if not (ok_server and ok_repl) then return '' end
  -- Plain finds (memchr) and fixed-width cuts of the two 40-digit ids: a pattern match tried
  -- every offset of the reply in Lua, a large part of a one-job call's instructions.
  local r = string.find(server, 'run_id:', 1, true)
  local m = string.find(repl, 'master_replid:', 1, true)
  if not (r and m) then return '' end
  local run_id = string.sub(server, r + 7, r + 46)
  local replid = string.sub(repl, m + 14, m + 53)
  if not (string.find(run_id, '^%x+$') and string.find(replid, '^%x+$')
      and #run_id == 40 and #replid == 40) then
    return ''
  end
  return run_id .. ':' .. replid
end
