-- Settle a reservation: end its lease and correct its counters to what the call
-- really spent. A lease that already ran out released the output estimate, so the
-- correction for it starts from what the expiry left counted.
--
-- KEYS[1]    the pool's index set: names of its counter hashes (for reset)
-- KEYS[2]    the pool's leases, a sorted set by expiry
-- KEYS[3]    the pool's lease hash: id -> releases
-- KEYS[4]    the holds hash (where the pool's "full until" record lives)
-- KEYS[4+i]  the counter hash of entry i: bucket -> amount
-- ARGV[1]    the lease id ("" when the reservation has no lease)
-- ARGV[2]    the pool's full record ("full:<pool>"): dropped when room comes back
-- then       4 values per entry: bucket, delta if the lease is live, delta if it
--            ran out, expiry in ms (0: never)

local live = true
if ARGV[1] ~= '' then
    live = redis.call('ZREM', KEYS[2], ARGV[1]) == 1
    redis.call('HDEL', KEYS[3], ARGV[1])
end
local gave = false
for i = 5, #KEYS do
    local at = 2 + (i - 5) * 4
    local key = KEYS[i]
    local bucket = ARGV[at + 1]
    -- Strings, as Python sent them: Lua would print a large number as 1e+14.
    local amount = ARGV[at + 2]
    if not live then
        amount = ARGV[at + 3]
    end
    local ttl = ARGV[at + 4]
    if tonumber(amount) < 0 then
        gave = true
    end
    if tonumber(amount) ~= 0 then
        local total = redis.call('HINCRBY', key, bucket, amount)
        if total <= 0 then
            redis.call('HDEL', key, bucket)
        else
            redis.call('SADD', KEYS[1], key)
            -- A bucket re-created after its hash expired must expire again.
            if tonumber(ttl) > 0 and redis.call('PTTL', key) < tonumber(ttl) then
                redis.call('PEXPIRE', key, ttl)
            end
        end
    end
end
if gave then
    redis.call('HDEL', KEYS[4], ARGV[2])
end
if live then
    return 1
end
return 0
