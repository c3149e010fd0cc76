#!/usr/bin/env python3
"""Seed the seed's topology into a local AWS emulator (moto or LocalStack Pro).

One internal ALB `backend`; listeners 9100 and 9101 each forward to a target
group holding one Basic instance; listener 9102 forwards to the target group of
the Auto Scaling group `web` (min 1, max 4) with a 50% average-CPU
target-tracking policy. The emulator's endpoint comes from AWS_ENDPOINT_URL.

    AWS_ENDPOINT_URL=http://127.0.0.1:5000 python3 localstack/seed.py
    AWS_ENDPOINT_URL=http://127.0.0.1:5000 python3 localstack/seed.py --desired 3

Emulators never evaluate scaling policies, so `--desired N` sets the group's
desired capacity directly, standing in for a scale-out or scale-in.
Prints a JSON summary of what exists afterwards.
"""

import argparse
import json
import os
import sys

try:
    import boto3
    from botocore.exceptions import ClientError
except ImportError:
    sys.exit("seed.py needs boto3: pip install 'moto[server]' (or pip install boto3)")

REGION = os.environ.get("AWS_REGION", "ap-northeast-2")
AMI = "ami-12c6146b"  # in moto's default image list
ASG = "web"
TEMPLATE = "web-lt"


def clients():
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        sys.exit("set AWS_ENDPOINT_URL to the emulator, e.g. http://127.0.0.1:5000 (never real AWS)")
    host = endpoint.split("://", 1)[-1].split(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") and not host.startswith("127."):
        sys.exit(f"refusing to seed {endpoint}: only a loopback emulator endpoint is allowed")
    kw = dict(endpoint_url=endpoint, region_name=REGION)
    return boto3.client("ec2", **kw), boto3.client("elbv2", **kw), boto3.client("autoscaling", **kw)


def existing_lb(elb):
    try:
        return elb.describe_load_balancers(Names=["backend"])["LoadBalancers"][0]
    except ClientError:
        return None


def create(ec2, elb, asg):
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
        for cidr, zone in (("10.20.1.0/24", "a"), ("10.20.2.0/24", "c"))
    ]
    lb = elb.create_load_balancer(Name="backend", Subnets=subnets, Scheme="internal", Type="application")
    lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]

    def target_group(name):
        created = elb.create_target_group(Name=name, Protocol="HTTP", Port=9100, VpcId=vpc, TargetType="instance")
        return created["TargetGroups"][0]["TargetGroupArn"]

    def listener(port, tg):
        elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=port,
                            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])

    for port, name in ((9100, "basic-a"), (9101, "basic-b")):
        tg = target_group(name)
        listener(port, tg)
        tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}]
        instance = ec2.run_instances(ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                     SubnetId=subnets[port - 9100], TagSpecifications=tags)["Instances"][0]
        elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance["InstanceId"], "Port": 9100}])

    tg_asg = target_group("web-asg")
    listener(9102, tg_asg)
    ec2.create_launch_template(LaunchTemplateName=TEMPLATE,
                               LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"})
    asg.create_auto_scaling_group(AutoScalingGroupName=ASG, LaunchTemplate={"LaunchTemplateName": TEMPLATE},
                                  MinSize=1, MaxSize=4, DesiredCapacity=1, TargetGroupARNs=[tg_asg],
                                  VPCZoneIdentifier=",".join(subnets))
    asg.put_scaling_policy(AutoScalingGroupName=ASG, PolicyName="cpu50", PolicyType="TargetTrackingScaling",
                           TargetTrackingConfiguration={
                               "PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
                               "TargetValue": 50.0})


def summary(ec2, elb, asg):
    lb = existing_lb(elb)
    listeners = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    basic = {}
    for name in ("basic-a", "basic-b"):
        reservations = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
        basic[name] = [i["InstanceId"] for r in reservations for i in r["Instances"]][0]
    return {
        "basic": basic,
        "load_balancer": lb["LoadBalancerName"],
        "dns_name": lb["DNSName"],
        "listeners": sorted(l["Port"] for l in listeners),
        "asg": ASG,
        "asg_desired": group["DesiredCapacity"],
        "asg_members": sorted(i["InstanceId"] for i in group["Instances"]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--desired", type=int, help="set the ASG's desired capacity (1-4)")
    args = parser.parse_args()
    ec2, elb, asg = clients()
    if existing_lb(elb) is None:
        create(ec2, elb, asg)
    if args.desired is not None:
        asg.set_desired_capacity(AutoScalingGroupName=ASG, DesiredCapacity=args.desired)
    print(json.dumps(summary(ec2, elb, asg), indent=2))


if __name__ == "__main__":
    main()
