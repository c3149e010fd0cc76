#!/usr/bin/env python3
"""Creates infra/cloudformation/fleetscrape.yml as a stack in moto's CloudFormation
and prints what tests/infra.rs asserts, as one JSON object on stdout.

moto evaluates the template itself, with three exceptions worked around here
and reported in the output (`moto_shims`), each as CloudFormation documents it:
  * Fn::Cidr is missing from moto: resolved here (ipBlock split into count
    blocks of cidrBits host bits);
  * Fn::GetAZs "" yields us-east-1's zones in moto: resolved to the region's;
  * moto names an unnamed ECR repository from the stack and logical id, with
    capitals ECR refuses (CloudFormation's own generated names are lower
    case): the test gives it a lower-case RepositoryName.
moto also does not validate parameter values against their constraints, so
`parameter_checks` applies CloudFormation's rules (AllowedPattern, AllowedValues,
MinValue/MaxValue, MinLength/MaxLength) to the defaults and to bad values.

usage: create_stack.py ENDPOINT_URL TEMPLATE   (fake credentials from the environment)
"""
import ast
import base64
import ipaddress
import json
import re
import sys
import time

import boto3
from cfnlint.decode import decode

REGION = "ap-northeast-2"
STACK = "fleetscrape"


def clients(endpoint):
    kw = dict(endpoint_url=endpoint, region_name=REGION)
    return {name: boto3.client(name, **kw) for name in ["cloudformation", "ec2", "iam", "elbv2", "autoscaling", "ssm"]}


def resolve(node, params, zones):
    """Fn::Cidr and Fn::GetAZs "" as CloudFormation evaluates them."""
    if isinstance(node, list):
        return [resolve(item, params, zones) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Fn::Cidr"}:
        block, count, bits = (resolve(a, params, zones) for a in node["Fn::Cidr"])
        if isinstance(block, dict):
            block = params[block["Ref"]]
        network = ipaddress.ip_network(block)
        blocks = network.subnets(new_prefix=network.max_prefixlen - int(bits))
        return [str(b) for _, b in zip(range(int(count)), blocks)]
    if node == {"Fn::GetAZs": ""}:
        return zones
    return {key: resolve(value, params, zones) for key, value in node.items()}


def violations(spec, value):
    """CloudFormation's parameter constraints, as CreateStack applies them."""
    found = []
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        found.append("AllowedValues")
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
        found.append("AllowedPattern")
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        found.append("MinLength")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        found.append("MaxLength")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            return found + ["Number"]
        if "MinValue" in spec and number < float(spec["MinValue"]):
            found.append("MinValue")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            found.append("MaxValue")
    return found


def document(policy):
    """A policy document as boto3 hands it back: a dict, JSON, or (moto) a Python repr."""
    if isinstance(policy, dict):
        return policy
    try:
        return json.loads(policy)
    except ValueError:
        return ast.literal_eval(policy)


# Values CloudFormation must refuse, one per parameter that has a constraint.
BAD_VALUES = {
    "BackendInstanceType": "t3 micro",
    "MonitoringInstanceType": "",
    "AsgMinSize": "0",
    "AsgMaxSize": "0",
    "CpuTarget": "101",
    "VpcCidr": "10.20.0.0/8",
    "GrafanaAllowedCidr": "0.0.0.0",
    "FleetscrapeImageTag": "latest; rm -rf /",
}


def main():
    endpoint, template_path = sys.argv[1], sys.argv[2]
    aws = clients(endpoint)
    template, errors = decode(template_path)
    if errors:
        sys.exit(f"{template_path}: {errors}")
    params = {name: str(spec.get("Default")) for name, spec in template["Parameters"].items()}
    zones = [z["ZoneName"] for z in aws["ec2"].describe_availability_zones()["AvailabilityZones"]]
    body = resolve(dict(template), params, zones)
    body["Resources"]["ImageRepository"]["Properties"]["RepositoryName"] = f"{STACK}-image"

    cfn = aws["cloudformation"]
    cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_IAM"])
    deadline = time.monotonic() + 120
    while True:
        stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            sys.exit(f"stack still {stack['StackStatus']} after 120 s")
        time.sleep(0.5)

    summaries = cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    created = {r["LogicalResourceId"]: r for r in summaries if r["LogicalResourceId"]}
    not_created = sorted(
        {spec["Type"] for name, spec in template["Resources"].items() if name not in created}
    )
    role = created["MonitoringRole"]["PhysicalResourceId"]
    inline = {
        name: document(aws["iam"].get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
        for name in aws["iam"].list_role_policies(RoleName=role)["PolicyNames"]
    }
    instances = [
        i for r in aws["ec2"].describe_instances()["Reservations"] for i in r["Instances"]
    ]
    lbs = aws["elbv2"].describe_load_balancers()["LoadBalancers"]
    listeners = aws["elbv2"].describe_listeners(LoadBalancerArn=lbs[0]["LoadBalancerArn"])["Listeners"]
    groups = aws["autoscaling"].describe_auto_scaling_groups()["AutoScalingGroups"]

    monitoring = created["MonitoringInstance"]["PhysicalResourceId"]
    backend_template = created["BackendLaunchTemplate"]["PhysicalResourceId"]
    versions = aws["ec2"].describe_launch_template_versions(LaunchTemplateId=backend_template)
    user_data = {
        "MonitoringInstance": aws["ec2"].describe_instance_attribute(
            InstanceId=monitoring, Attribute="userData")["UserData"]["Value"],
        "BackendLaunchTemplate": versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"],
    }

    print(json.dumps({
        "user_data": {name: base64.b64decode(data).decode() for name, data in user_data.items()},
        "status": stack["StackStatus"],
        "status_reason": stack.get("StackStatusReason"),
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "template_outputs": sorted(template.get("Outputs", {})),
        "resources": {name: [r["ResourceType"], r["ResourceStatus"]] for name, r in created.items()},
        "not_created_types": not_created,
        "role_inline_policies": inline,
        "instance_images": sorted({i["ImageId"] for i in instances}),
        "ami_from_ssm": aws["ssm"].get_parameter(Name=params["LatestAmiId"])["Parameter"]["Value"],
        "load_balancers": [{"name": lb["LoadBalancerName"], "scheme": lb["Scheme"], "dns": lb["DNSName"]} for lb in lbs],
        "listener_ports": sorted(l["Port"] for l in listeners),
        "asgs": [{"name": g["AutoScalingGroupName"], "min": g["MinSize"], "max": g["MaxSize"],
                  "target_groups": len(g.get("TargetGroupARNs", []))} for g in groups],
        "not_created": {
            name: spec for name, spec in template["Resources"].items() if name not in created
        },
        "moto_shims": ["Fn::Cidr", "Fn::GetAZs \"\"", "ImageRepository.RepositoryName"],
        "parameter_checks": {
            name: {
                "default": violations(spec, params[name]),
                "bad_value": BAD_VALUES.get(name),
                "bad": violations(spec, BAD_VALUES[name]) if name in BAD_VALUES else None,
            }
            for name, spec in template["Parameters"].items()
        },
    }, default=str))


if __name__ == "__main__":
    main()
