-- Admit a demand if the pool is not on hold and every limit has room, and count it:
-- the check and the count are one atomic step, so no two callers share the last unit.
--
-- KEYS[1]    the holds hash: subject -> "<until>|<reason>" (empty until: forever)
-- KEYS[2]    the pool's index set: names of its counter hashes (for reset)
-- KEYS[3]    the pool's leases, a sorted set by expiry
-- KEYS[4]    the pool's lease hash: id -> releases
-- KEYS[4+i]  the counter hash of series i: bucket -> amount
-- ARGV[1]    now, epoch seconds
-- ARGV[2..4] hold subjects to check ("pool:<pool>", "key:<key>", "model:<model>" or "")
-- ARGV[5]    n, the number of distinct series; then 5 values per series:
--            first bucket counted, last bucket counted, bucket to add to,
--            amount to add, expiry in ms (0: the series never expires)
-- then       m, the number of limits; then 3 values per limit:
--            its series (1-based), what the demand needs of it, the limit's amount
--
-- then       the lease: its id ("" for none), its expiry, what it releases, and
--            how long (ms) the pool's lease keys must live at least
--
-- Overdue leases of the pool are released first. A lease id the pool already
-- holds is a retry of a reserve whose reply was lost: {"dup"}, nothing counted.
-- Returns {"ok", level...}, {"hold", subject, hold value}, {"big", limit} (the demand
-- exceeds the limit at all) or {"full", limit, used, bucket, amount, ...} with the
-- non-empty buckets in the window, from which Python computes when room frees up.
-- Window arithmetic (calendars, time zones) stays in Python: this script only
-- compares bucket numbers it is given.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[5])
local at = 6 + n * 5
local m = tonumber(ARGV[at])
local lease_at = at + m * 3 + 1
local lease_id = ARGV[lease_at]

expire_leases(KEYS[3], KEYS[4], ARGV[1])
if lease_id ~= '' and redis.call('HEXISTS', KEYS[4], lease_id) == 1 then
    return {'dup'}
end

for i = 2, 4 do
    local subject = ARGV[i]
    if subject ~= '' then
        local hold = redis.call('HGET', KEYS[1], subject)
        if hold then
            local cut = string.find(hold, '|', 1, true)
            local untl = string.sub(hold, 1, cut - 1)
            if untl == '' or tonumber(untl) > now then
                return {'hold', subject, hold}
            end
        end
    end
end

-- Sum one series over lo..hi, dropping buckets that slid out of every window.
local function window(key, lo, hi)
    local flat = redis.call('HGETALL', key)
    local used, buckets, stale = 0, {}, {}
    for j = 1, #flat, 2 do
        local bucket = tonumber(flat[j])
        if bucket < lo then
            stale[#stale + 1] = flat[j]
        elseif bucket <= hi then
            local amount = tonumber(flat[j + 1])
            used = used + amount
            buckets[#buckets + 1] = bucket
            buckets[#buckets + 1] = amount
        end
    end
    -- In slices: unpack() of a long list would overflow Lua's stack.
    for j = 1, #stale, 500 do
        redis.call('HDEL', key, unpack(stale, j, math.min(j + 499, #stale)))
    end
    return used, buckets
end

local used, buckets = {}, {}
for i = 1, n do
    local at5 = 5 + (i - 1) * 5
    used[i], buckets[i] = window(KEYS[4 + i], tonumber(ARGV[at5 + 1]), tonumber(ARGV[at5 + 2]))
end

-- What each limit counts once this reservation is in: the router's alerts use it.
local levels = {'ok'}
for k = 1, m do
    local series = tonumber(ARGV[at + (k - 1) * 3 + 1])
    local need = tonumber(ARGV[at + (k - 1) * 3 + 2])
    local amount = tonumber(ARGV[at + (k - 1) * 3 + 3])
    if need > amount then
        return {'big', k}
    end
    if used[series] + need > amount then
        local reply = {'full', k, used[series]}
        for _, value in ipairs(buckets[series]) do
            reply[#reply + 1] = value
        end
        return reply
    end
    levels[#levels + 1] = used[series] + need
end

for i = 1, n do
    local at5 = 5 + (i - 1) * 5
    local key = KEYS[4 + i]
    local bucket = ARGV[at5 + 3]
    local amount = ARGV[at5 + 4]
    local ttl = ARGV[at5 + 5]
    -- Amounts go to Redis as the strings Python sent: Lua would print a large
    -- number as 1e+14, which HINCRBY refuses.
    if tonumber(amount) ~= 0 then
        local total = redis.call('HINCRBY', key, bucket, amount)
        if total <= 0 then
            -- Counters never go below zero; an empty bucket is no bucket.
            redis.call('HDEL', key, bucket)
        else
            redis.call('SADD', KEYS[2], key)
            -- Only ever lengthen the expiry (-1, no expiry yet, is shorter than any).
            if tonumber(ttl) > 0 and redis.call('PTTL', key) < tonumber(ttl) then
                redis.call('PEXPIRE', key, ttl)
            end
        end
    end
end
if lease_id ~= '' then
    redis.call('ZADD', KEYS[3], ARGV[lease_at + 1], lease_id)
    redis.call('HSET', KEYS[4], lease_id, ARGV[lease_at + 2])
    -- Lease keys of a pool nobody touches again go once every lease has run out.
    local ttl = tonumber(ARGV[lease_at + 3])
    for k = 3, 4 do
        if redis.call('PTTL', KEYS[k]) < ttl then
            redis.call('PEXPIRE', KEYS[k], ttl)
        end
    end
end
return levels
