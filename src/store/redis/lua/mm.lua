-- Prepended to every matchmaking script that names keys from data it reads: a
-- ticket's queue, the accounts of a forming or started match, a match's game server,
-- the match holding a lease. Those names are not known before the script reads the
-- data, so they cannot be in KEYS (reading first, then running the script, would
-- race). Every matchmaking key carries the `{mm}` hash tag, so all of them live in
-- one slot, the one the script runs in: KEYS[1] is always `<prefix>{mm}:tickets`,
-- and `mm(rest)` names `<prefix>{mm}:<rest>` beside it. Every other key is in KEYS.
local MM = string.sub(KEYS[1], 1, -#'tickets' - 1)
local function mm(rest) return MM .. rest end
