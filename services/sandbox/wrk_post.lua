-- wrk script: POST an OpenAI request to the sandbox (or anything in front of it).
--   wrk -t1 -c64 -d5s -s services/sandbox/wrk_post.lua http://127.0.0.1:8090/v1/chat/completions
-- WRK_BODY overrides the JSON body, e.g. a stream with [sandbox tokens=50]. Non-2xx answers are
-- reported by wrk as "Non-2xx or 3xx responses".
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("WRK_KEY") or "sk-bench")
wrk.body = os.getenv("WRK_BODY")
  or '{"model":"sandbox-chat","messages":[{"role":"user","content":"Say something deterministic please"}]}'
