-- wrk script: GET one of 1000 keys (run put.lua first so they exist).
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/keys/bench/" .. (counter % 1000))
end
