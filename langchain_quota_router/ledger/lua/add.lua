-- Add amounts (possibly negative) to counter buckets, never below zero: settles a
-- reservation's estimate into what the call really spent.
--
-- KEYS[1]    the pool's index set: names of its counter hashes (for reset)
-- KEYS[1+i]  the counter hash of entry i: bucket -> amount
-- ARGV       3 values per entry: bucket, amount to add, expiry in ms (0: never)

for i = 2, #KEYS do
    local at = (i - 2) * 3
    local key = KEYS[i]
    local bucket = ARGV[at + 1]
    -- Strings, as Python sent them: Lua would print a large number as 1e+14.
    local amount = ARGV[at + 2]
    local ttl = ARGV[at + 3]
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
return 0
