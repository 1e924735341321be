"""Evaluates a ValidatingAdmissionPolicy's CEL the way the API server does,
for the deploy scenarios (no cluster runs there).

stdin:  {"policy": <rendered ValidatingAdmissionPolicy>,
         "cases": [{"name", "object", "oldObject", "request"}]}
stdout: [{"name", "allowed": bool, "error": str|null, "failed": [messages]}]

Variables are evaluated in order and exposed as `variables.<name>`, then each
validation; a validation that errors counts as a denial, as with the shipped
failurePolicy: Fail. Uses cel-python (PyPI), a CEL implementation
independent of Kubernetes' own.
"""

import json
import sys

import celpy
from celpy import celtypes


def evaluate(env, policy, case):
    spec = policy["spec"]
    activation = {
        "object": celpy.json_to_cel(case.get("object")),
        "oldObject": celpy.json_to_cel(case.get("oldObject")),
        "request": celpy.json_to_cel(case["request"]),
    }
    variables = {}
    for var in spec.get("variables", []):
        activation["variables"] = celtypes.MapType(variables)
        program = env.program(env.compile(var["expression"]))
        value = program.evaluate(activation)
        if isinstance(value, Exception):
            raise value
        variables[celtypes.StringType(var["name"])] = value
    activation["variables"] = celtypes.MapType(variables)
    failed = []
    for validation in spec["validations"]:
        program = env.program(env.compile(validation["expression"]))
        value = program.evaluate(activation)
        if isinstance(value, Exception):
            raise value
        if value is not True and value != celtypes.BoolType(True):
            failed.append(validation.get("message", validation["expression"]))
    return failed


def main():
    doc = json.load(sys.stdin)
    env = celpy.Environment()
    out = []
    for case in doc["cases"]:
        try:
            failed = evaluate(env, doc["policy"], case)
            out.append({"name": case["name"], "allowed": not failed, "error": None, "failed": failed})
        except Exception as err:  # an erroring expression denies (failurePolicy: Fail)
            out.append({"name": case["name"], "allowed": False, "error": repr(err), "failed": []})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
