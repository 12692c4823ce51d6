-- Forget every counter of a pool and, optionally, its block.
--
-- KEYS[1]  the holds hash: subject -> "<until>|<reason>"
-- KEYS[2]  the pool's index set: names of its counter hashes
-- KEYS[3]  the pool's leases (sorted set), KEYS[4] the pool's lease hash
-- ARGV[1]  the hold subject to lift ("pool:<pool>"), or "" to keep holds
-- ARGV[2]  the pool's full record to drop ("full:<pool>"), if given

-- The counter hashes are named by the index, not by KEYS: fine on one Redis
-- server (not Redis Cluster, which needs every key declared).
local counters = redis.call('SMEMBERS', KEYS[2])
for j = 1, #counters, 500 do
    redis.call('DEL', unpack(counters, j, math.min(j + 499, #counters)))
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
if ARGV[1] ~= '' then
    redis.call('HDEL', KEYS[1], ARGV[1])
end
if ARGV[2] and ARGV[2] ~= '' then
    redis.call('HDEL', KEYS[1], ARGV[2])
end
return #counters
