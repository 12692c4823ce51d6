-- Hand back what a fail-open process counted during an outage, once: release the
-- slice it held and count what it admitted from it, in one atomic step, so no
-- other process ever sees the room of the slice without the calls made from it.
--
-- KEYS[1]    the pool's index set: names of its counter hashes (for reset)
-- KEYS[2]    the hand-back's marker: set here, so a hand-back sent twice (a
--            journal read by two processes, a lost reply) counts once
-- KEYS[3]    the holds hash (where the pool's "full until" record lives)
-- KEYS[3+i]  a counter hash: bucket -> amount
-- ARGV[1]    how long (ms) the marker is kept
-- ARGV[2]    the pool's full record ("full:<pool>"): dropped when room comes back
-- then       3 values per counter: bucket, delta, expiry in ms (0: never)
--
-- Returns 1 if applied, 0 if this hand-back was applied before.

if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
    return 0
end
local gave = false
for i = 4, #KEYS do
    local at = 3 + (i - 4) * 3
    local delta = ARGV[at + 1]
    if tonumber(delta) < 0 then
        gave = true
    end
    if tonumber(delta) ~= 0 then
        -- Strings, as Python sent them: Lua would print a large number as 1e+14.
        local total = redis.call('HINCRBY', KEYS[i], ARGV[at], delta)
        if total <= 0 then
            redis.call('HDEL', KEYS[i], ARGV[at])
        else
            redis.call('SADD', KEYS[1], KEYS[i])
            local ttl = tonumber(ARGV[at + 2])
            if ttl > 0 and redis.call('PTTL', KEYS[i]) < ttl then
                redis.call('PEXPIRE', KEYS[i], ARGV[at + 2])
            end
        end
    end
end
if gave then
    redis.call('HDEL', KEYS[3], ARGV[2])
end
return 1
