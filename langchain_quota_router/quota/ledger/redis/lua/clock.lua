-- The fleet clock: the server's TIME, and the reference that turns it into fleet
-- time (fleet time = server time + reference). The first ledger to ask sets the
-- reference from its own clock, so the fleet keeps that ledger's time line.
--
-- KEYS[1]  the reference: fleet time minus server time, seconds (a decimal string)
-- ARGV[1]  the asking ledger's clock, epoch seconds (used if no reference is set)
--
-- Returns {seconds, microseconds, reference}.

local t = redis.call('TIME')
local ref = redis.call('GET', KEYS[1])
if not ref then
    local server = tonumber(t[1]) + tonumber(t[2]) / 1000000
    ref = string.format('%.6f', tonumber(ARGV[1]) - server)
    redis.call('SET', KEYS[1], ref)
end
return {t[1], t[2], ref}
