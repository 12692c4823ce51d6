-- Drop the buckets of one counter hash older than a bucket number.
--
-- KEYS[1]  the counter hash: bucket -> amount
-- ARGV[1]  the oldest bucket to keep

local below = tonumber(ARGV[1])
local fields = redis.call('HKEYS', KEYS[1])
local stale = {}
for _, field in ipairs(fields) do
    if tonumber(field) < below then
        stale[#stale + 1] = field
    end
end
for j = 1, #stale, 500 do
    redis.call('HDEL', KEYS[1], unpack(stale, j, math.min(j + 499, #stale)))
end
return #stale
