-- Lower the room a limit has to what the vendor says remains (never raise it).
--
-- KEYS[1]  the pool's index set: names of its counter hashes (for reset)
-- KEYS[2]  the limit's counter hash: bucket -> amount
-- ARGV     first bucket counted, last bucket counted, bucket to add to,
--          the limit's amount, what the vendor says remains, expiry in ms (0: never)

local key = KEYS[2]
local lo, hi = tonumber(ARGV[1]), tonumber(ARGV[2])
local flat = redis.call('HGETALL', key)
local used = 0
for j = 1, #flat, 2 do
    local bucket = tonumber(flat[j])
    if bucket >= lo and bucket <= hi then
        used = used + tonumber(flat[j + 1])
    end
end
local room = tonumber(ARGV[4]) - used
local remaining = tonumber(ARGV[5])
if remaining < room then
    -- %d, not tostring: Lua would print a large number as 1e+14.
    redis.call('HINCRBY', key, ARGV[3], string.format('%d', room - remaining))
    redis.call('SADD', KEYS[1], key)
    local ttl = ARGV[6]
    if tonumber(ttl) > 0 and redis.call('PTTL', key) < tonumber(ttl) then
        redis.call('PEXPIRE', key, ttl)
    end
end
return 0
