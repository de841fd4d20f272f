-- Prepended to fetch.lua, ack.lua, renew.lua and release.lua (client.rs): reading a lease from
-- the `tokens` hash. A lease is one value there, 'token|attempt|worker|leased_at', written once
-- per batch: the whole lease in one hash instead of three (tokens, holders, attempts), two
-- writes and a delete less per job. A lease written by an earlier release (a worker not yet
-- upgraded, on the same queue during a rolling upgrade) is the bare token, its holder in
-- `holders` and its attempt count in `attempts`; every script here reads both forms.

-- Whether the lease value `v` carries `token`: the whole value, or its part before the first '|'.
local function lease_holds(v, token)
  -- A plain find anchored at 1 compares in place; `string.sub` would make a string to compare.
  return v == token or (string.byte(v, #token + 1) == 124 and string.find(v, token, 1, true) == 1)
end

-- The parts of a lease value: token, attempt (a number) and holder ('worker|leased_at'); the
-- attempt and holder are nil for a lease of an earlier release (a bare token).
local function lease_parts(v)
  local a = string.find(v, '|', 1, true)
  if not a then return v, nil, nil end
  local b = string.find(v, '|', a + 1, true)
  if not b then return string.sub(v, 1, a - 1), tonumber(string.sub(v, a + 1)), nil end
  return string.sub(v, 1, a - 1), tonumber(string.sub(v, a + 1, b - 1)), string.sub(v, b + 1)
end
