-- The caller lookup: number -> subscriber -> switch -> district -> state ->
-- the announcement they hear, in one round trip and within one inventory
-- generation (a script runs atomically, so an import swapping generations or
-- the publisher replacing the active set cannot land halfway through it).
--
-- KEYS[1]  the inventory hash (gen, buckets)
-- KEYS[2]  the switch state hash
-- KEYS[3]  the active announcements as lookups need them (id -> small record)
-- KEYS[4]  switch id -> id of the announcement its callers hear
-- KEYS[5]  id of the announcement everyone else hears
-- ARGV[1]  the caller as E.164 digits, or "" when withheld
-- ARGV[2]  what every generation's keys start with (Keys.generations)
--
-- Returns {gen, switch record, district record, subscriber details, switch
-- state, announcement}; each is false when missing. Placeholders like PHONES
-- are filled in from keys.py.
local function heard(switch_id)
  local id = false
  if switch_id then
    id = redis.call('HGET', KEYS[4], switch_id)
  end
  if not id then
    id = redis.call('GET', KEYS[5])
  end
  if not id then
    return false
  end
  return redis.call('HGET', KEYS[3], id)
end

local meta = redis.call('HMGET', KEYS[1], 'gen', 'buckets')
local gen = meta[1]
local digits = ARGV[1]
if not gen or digits == '' then
  return {gen or false, false, false, false, false, heard(false)}
end
local g = ARGV[2] .. gen .. ':'
local bucket = tonumber(string.sub(digits, -$BUCKET_DIGITS)) % tonumber(meta[2])
local index = redis.call('HGET', g .. '$PHONES:' .. bucket, digits)
if not index then
  return {gen, false, false, false, false, heard(false)}
end
local switch = redis.call('HGET', g .. '$SWITCHES', index)
local district, state, switch_id = false, false, false
if switch then
  local record = cjson.decode(switch)
  switch_id = record['id']
  district = redis.call('HGET', g .. '$DISTRICTS', record['district'])
  state = redis.call('HGET', KEYS[2], switch_id)
end
local details = redis.call('HGET', g .. '$DETAILS:' .. bucket, digits)
return {gen, switch, district, details, state, heard(switch_id)}
