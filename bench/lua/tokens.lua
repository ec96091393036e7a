-- bench/lua/tokens.lua: many-users row. Each request carries the next bearer
-- token from a file (one token per line), round-robin; each wrk thread starts
-- at a different offset so threads do not walk the same users in lock-step.
-- Script arguments (after `--` on the wrk command line): TOKENS_FILE THREADS.
-- Requests are formatted once in init(), so request() costs one table lookup.
local thread_counter = 0

function setup(thread)
  thread:set("bench_thread_index", thread_counter)
  thread_counter = thread_counter + 1
end

local requests_ = {}
local count = 0
local pos = 0

function init(args)
  local path = args[1]
  local threads = tonumber(args[2]) or 1
  if not path then error("tokens.lua: missing TOKENS_FILE argument") end
  for line in io.lines(path) do
    if #line > 0 then
      count = count + 1
      requests_[count] = wrk.format(nil, nil,
        { ["Host"] = wrk.headers["Host"], ["Authorization"] = "Bearer " .. line })
    end
  end
  if count == 0 then error("tokens.lua: no tokens in " .. path) end
  pos = math.floor(count * (bench_thread_index or 0) / threads) % count
end

function request()
  pos = pos + 1
  if pos > count then pos = 1 end
  return requests_[pos]
end
