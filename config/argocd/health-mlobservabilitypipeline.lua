-- Argo CD health of an mlobs.io/MLObservabilityPipeline (install: argocd-cm-patch.yaml).
-- Lua 5.1 (Argo CD runs health scripts in gopher-lua); tested by tests/health.rs.
--
-- Healthy      Ready=True, and the status describes the current generation.
-- Progressing  the operator has not reported on this generation yet, or Ready is False or
--              Unknown for a reason that resolves by itself (reconciling, waiting for AWS,
--              AWS throttling, the collector rolling out).
-- Degraded     Ready=False for a reason that waits for a person: a spec, policy or IAM change.
local hs = {}

-- Ready reasons that no retry fixes (src/crd/conditions.rs, src/aws/error.rs, the plan's
-- PlanError reasons and the controller's CleanupFailed). Any other reason is Progressing.
local terminal = {
  InvalidSpec = true,
  NameTooLong = true,
  InvalidName = true,
  TooManyTags = true,
  InvalidAwsPlan = true,
  PolicyViolation = true,
  PolicyNotFound = true,
  DefaultConflict = true,
  BudgetExceeded = true,
  NameConflict = true,
  AccessDenied = true,
  AwsError = true,
  AwsResourceMissing = true,
  CleanupFailed = true,
  PodSecurityForbidden = true,
}

local function find(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status
local ready = nil
if status ~= nil then
  ready = find(status.conditions, "Ready")
end

if status == nil or ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
elseif generation ~= nil and (status.observedGeneration == nil or status.observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation)
elseif generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "pipeline is running"
elseif ready.status == "False" and ready.reason ~= nil and terminal[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
else
  hs.status = "Progressing"
  if ready.reason ~= nil then
    hs.message = describe(ready)
  else
    hs.message = "Ready is " .. tostring(ready.status)
  end
end
return hs
