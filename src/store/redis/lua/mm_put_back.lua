-- A forming match got no game server: its players go back at their places, each
-- ticket one try more (those out of tries end). See mm_restore.lua.
-- KEYS: tickets, forming. ARGV: match, max tries.
-- Returns how many were put back.
local back = restore(ARGV[1], {}, 1, tonumber(ARGV[2]))
return back
