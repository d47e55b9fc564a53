-- The caller lookup: number -> subscriber -> switch -> district -> state ->
-- the announcement they hear, for one caller or for every caller who asked
-- while the previous round trip was in flight, in one round trip and within
-- one inventory generation (a script runs atomically, so an import swapping
-- generations or the publisher replacing the active set cannot land halfway
-- through it).
--
-- KEYS[1]  the inventory hash (gen, buckets)
-- KEYS[2]  the switch state hash
-- KEYS[3]  the active announcements as lookups need them (id -> small record)
-- KEYS[4]  switch id -> id of the announcement its callers hear
-- KEYS[5]  id of the announcement everyone else hears
-- ARGV[1]  what every generation's keys start with (Keys.generations)
-- ARGV[2..] the callers as E.164 digits, "" when withheld or not a number
--
-- Returns {gen, then six fields a caller: switch id, district id, district
-- name, subscriber details, switch state, announcement}; each is false when
-- missing. A caller whose switch record is missing is not known; a caller
-- whose records are broken gets an error in place of the switch id, and the
-- others their answers. What callers share (their switch, its state and
-- announcement, a district's name) is read once a call, however many of them
-- asked: two commands a caller, the rest a switch.
-- Placeholders like PHONES are filled in from keys.py.
local FIELDS = 6
local meta = redis.call('HMGET', KEYS[1], 'gen', 'buckets')
local gen = meta[1]
local out = {gen or false}

local everyone = nil -- what callers without an announcement of their own hear
local records = {} -- announcement id -> its record
local function record(id)
  local found = records[id]
  if found == nil then
    found = redis.call('HGET', KEYS[3], id)
    records[id] = found
  end
  return found
end
local function heard(switch_id)
  if switch_id then
    local id = redis.call('HGET', KEYS[4], switch_id)
    if id then
      return record(id)
    end
  end
  if everyone == nil then
    local id = redis.call('GET', KEYS[5])
    everyone = id and record(id)
  end
  return everyone
end

local function nobody(n)
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = false, false, false, false, false
  out[n + 6] = heard(false)
end

if not gen then
  for i = 2, #ARGV do
    nobody((i - 2) * FIELDS + 1)
  end
  return out
end

local g = ARGV[1] .. gen .. ':'
local buckets = tonumber(meta[2])
local switches, districts = g .. '$SWITCHES', g .. '$DISTRICTS'

local names = {} -- district id -> its name, or false
local function name_of(district)
  local name = names[district]
  if name == nil then
    local found = redis.call('HGET', districts, district)
    name = found and cjson.decode(found)['name'] or false
    names[district] = name
  end
  return name
end

-- switch index -> what its callers share: {id, district, district name,
-- state, announcement}, or false when the switch record is missing
local shared_by = {}
local function shared(index)
  local found = shared_by[index]
  if found == nil then
    found = false
    local switch = redis.call('HGET', switches, index)
    if switch then
      local decoded = cjson.decode(switch)
      local id, district = decoded['id'], decoded['district']
      found = {id, district, name_of(district), redis.call('HGET', KEYS[2], id), heard(id)}
    end
    shared_by[index] = found
  end
  return found
end

local function answer(n, digits)
  if digits == '' then
    return nobody(n)
  end
  local bucket = tonumber(string.sub(digits, -$BUCKET_DIGITS)) % buckets
  local index = redis.call('HGET', g .. '$PHONES:' .. bucket, digits)
  local switch = index and shared(index)
  if not switch then
    return nobody(n)
  end
  out[n + 1], out[n + 2], out[n + 3] = switch[1], switch[2], switch[3]
  out[n + 4] = redis.call('HGET', g .. '$DETAILS:' .. bucket, digits)
  out[n + 5], out[n + 6] = switch[4], switch[5]
end

for i = 2, #ARGV do
  local n = (i - 2) * FIELDS + 1
  local ok, err = pcall(answer, n, ARGV[i])
  if not ok then
    -- a caller whose records are broken fails alone, as if asked alone
    local why = type(err) == 'table' and err['err'] or tostring(err)
    out[n + 1] = redis.error_reply('lookup.lua, caller ' .. ARGV[i] .. ': ' .. why)
    for f = 2, FIELDS do
      out[n + f] = false
    end
  end
end
return out
