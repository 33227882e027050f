-- wrk script: PUT a 256-byte value to one of 1000 keys, chosen per request.
wrk.method = "PUT"
wrk.body = string.rep("v", 256)
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/keys/bench/" .. (counter % 1000))
end
