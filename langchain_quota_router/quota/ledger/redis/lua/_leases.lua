-- Shared by the scripts that touch a pool (prepended by Python when loading them):
-- release the output estimate of the pool's reservations whose lease ran out.
--
-- A pool's leases: a sorted set (lease id, scored by expiry) and a hash, lease id
-- -> what it releases, "<counter key>\31<bucket>\31<amount>" joined by "\30".

local function expire_leases(zkey, hkey, now)
    local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now)
    for _, id in ipairs(due) do
        local text = redis.call('HGET', hkey, id)
        if text then
            for key, bucket, amount in string.gmatch(text, '([^\30\31]+)\31([^\30\31]+)\31([^\30\31]+)') do
                -- The counter is named by the lease, not by KEYS: fine on one Redis
                -- server (not Redis Cluster), as reset.lua does.
                local total = redis.call('HINCRBY', key, bucket, '-' .. amount)
                if total <= 0 then
                    redis.call('HDEL', key, bucket)
                end
            end
            redis.call('HDEL', hkey, id)
        end
        redis.call('ZREM', zkey, id)
    end
    return #due
end

