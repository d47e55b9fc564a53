-- The caller lookup: number -> subscriber -> switch -> district, in one round
-- trip and within one inventory generation (a script runs atomically, so an
-- import swapping generations cannot land halfway through it).
--
-- KEYS[1]  the inventory hash (gen, buckets)
-- KEYS[2]  the switch state hash
-- ARGV[1]  the caller as E.164 digits, or "" when withheld
-- ARGV[2]  what every generation's keys start with (Keys.generations)
--
-- Returns {gen, switch record, district record, subscriber details, switch
-- state}; each is false when missing. Placeholders like PHONES are filled in from keys.py.
local meta = redis.call('HMGET', KEYS[1], 'gen', 'buckets')
local gen = meta[1]
if not gen then
  return {false, false, false, false, false}
end
local digits = ARGV[1]
if digits == '' then
  return {gen, false, false, false, false}
end
local g = ARGV[2] .. gen .. ':'
local bucket = tonumber(string.sub(digits, -$BUCKET_DIGITS)) % tonumber(meta[2])
local index = redis.call('HGET', g .. '$PHONES:' .. bucket, digits)
if not index then
  return {gen, false, false, false, false}
end
local switch = redis.call('HGET', g .. '$SWITCHES', index)
local district, state = false, false
if switch then
  local record = cjson.decode(switch)
  district = redis.call('HGET', g .. '$DISTRICTS', record['district'])
  state = redis.call('HGET', KEYS[2], record['id'])
end
local details = redis.call('HGET', g .. '$DETAILS:' .. bucket, digits)
return {gen, switch, district, details, state}
