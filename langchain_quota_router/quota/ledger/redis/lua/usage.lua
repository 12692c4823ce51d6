-- Read a pool's counters, after releasing the output estimate of overdue leases.
--
-- KEYS[1]    the pool's leases, a sorted set by expiry
-- KEYS[2]    the pool's lease hash: id -> releases
-- KEYS[2+i]  a counter hash: bucket -> amount
-- ARGV[1]    now, epoch seconds
--
-- Returns one flat HGETALL reply per counter hash.

expire_leases(KEYS[1], KEYS[2], ARGV[1])
local replies = {}
for i = 3, #KEYS do
    replies[#replies + 1] = redis.call('HGETALL', KEYS[i])
end
return replies
