//! Builds AWS topologies in moto through the AWS SDK. Seeding talks to moto
//! directly, not through the counting proxy, so only discovery is counted.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum,
    TargetDescription, TargetGroupTuple, TargetTypeEnum,
};

/// AMI id moto ships in its default image list.
const AMI: &str = "ami-12c6146b";
const LAUNCH_TEMPLATE: &str = "backend-lt";

/// SDK clients pointed at moto, and the VPC every resource goes in.
pub struct Seeder {
    pub ec2: aws_sdk_ec2::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    vpc_id: String,
    subnet_ids: Vec<String>,
}

/// A created load balancer.
pub struct Lb {
    pub arn: String,
    pub dns_name: String,
}

/// The seed's topology: listeners 9100 and 9101 each forward to a target group
/// with one Basic instance, 9102 forwards to the target group of an ASG.
pub struct SeedTopology {
    pub lb: Lb,
    pub basic_a: String,
    pub basic_b: String,
    pub asg_name: String,
    pub asg_target_group: String,
}

impl Seeder {
    /// Clients for `moto_url` and a fresh VPC with two subnets in two zones.
    pub async fn new(moto_url: &str) -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("ap-northeast-2"))
            .endpoint_url(moto_url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .load()
            .await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let vpc = ec2.create_vpc().cidr_block("10.20.0.0/16").send().await.expect("create vpc");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id").to_string();
        let mut subnet_ids = Vec::new();
        for (cidr, zone) in [("10.20.1.0/24", "ap-northeast-2a"), ("10.20.2.0/24", "ap-northeast-2c")] {
            let subnet = ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(cidr)
                .availability_zone(zone)
                .send()
                .await
                .expect("create subnet");
            subnet_ids.push(subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string());
        }
        Self {
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
            ec2,
            vpc_id,
            subnet_ids,
        }
    }

    /// An internal application load balancer.
    pub async fn load_balancer(&self, name: &str) -> Lb {
        let created = self
            .elbv2
            .create_load_balancer()
            .name(name)
            .set_subnets(Some(self.subnet_ids.clone()))
            .scheme(LoadBalancerSchemeEnum::Internal)
            .r#type(LoadBalancerTypeEnum::Application)
            .send()
            .await
            .expect("create load balancer");
        let lb = &created.load_balancers()[0];
        Lb { arn: lb.load_balancer_arn().expect("lb arn").into(), dns_name: lb.dns_name().expect("lb dns").into() }
    }

    /// An HTTP target group of instances on `port`.
    pub async fn target_group(&self, name: &str, port: i32) -> String {
        let created = self
            .elbv2
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Http)
            .port(port)
            .vpc_id(&self.vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .send()
            .await
            .expect("create target group");
        created.target_groups()[0].target_group_arn().expect("tg arn").to_string()
    }

    /// An HTTP listener whose default action forwards to one target group.
    pub async fn listener(&self, lb: &Lb, port: i32, target_group: &str) {
        let action = Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(target_group).build();
        self.create_listener(lb, port, action).await;
    }

    /// An HTTP listener with a `ForwardConfig` over weighted target groups.
    pub async fn weighted_listener(&self, lb: &Lb, port: i32, groups: &[(&str, i32)]) {
        let tuples = groups
            .iter()
            .map(|(arn, weight)| TargetGroupTuple::builder().target_group_arn(*arn).weight(*weight).build());
        let config = ForwardActionConfig::builder().set_target_groups(Some(tuples.collect())).build();
        let action = Action::builder().r#type(ActionTypeEnum::Forward).forward_config(config).build();
        self.create_listener(lb, port, action).await;
    }

    async fn create_listener(&self, lb: &Lb, port: i32, action: Action) {
        self.elbv2
            .create_listener()
            .load_balancer_arn(&lb.arn)
            .protocol(ProtocolEnum::Http)
            .port(port)
            .default_actions(action)
            .send()
            .await
            .expect("create listener");
    }

    /// `count` running instances in the first subnet, tagged with `tags`.
    pub async fn instances(&self, count: i32, tags: &[(&str, &str)]) -> Vec<String> {
        let mut request = self
            .ec2
            .run_instances()
            .image_id(AMI)
            .instance_type(InstanceType::T3Micro)
            .min_count(count)
            .max_count(count)
            .subnet_id(&self.subnet_ids[0]);
        if !tags.is_empty() {
            let tags = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build());
            let spec = TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags.collect()));
            request = request.tag_specifications(spec.build());
        }
        let reservation = request.send().await.expect("run instances");
        reservation.instances().iter().map(|i| i.instance_id().expect("instance id").to_string()).collect()
    }

    /// Registers `ids` in `target_group` on `port`.
    pub async fn register(&self, target_group: &str, ids: &[String], port: i32) {
        let targets = ids.iter().map(|id| TargetDescription::builder().id(id).port(port).build());
        self.elbv2
            .register_targets()
            .target_group_arn(target_group)
            .set_targets(Some(targets.collect()))
            .send()
            .await
            .expect("register targets");
    }

    /// Stops `ids`.
    pub async fn stop(&self, ids: &[String]) {
        self.ec2.stop_instances().set_instance_ids(Some(ids.to_vec())).send().await.expect("stop");
    }

    /// Terminates `ids`.
    pub async fn terminate(&self, ids: &[String]) {
        self.ec2.terminate_instances().set_instance_ids(Some(ids.to_vec())).send().await.expect("terminate");
    }

    async fn ensure_launch_template(&self) {
        let existing = self.ec2.describe_launch_templates().launch_template_names(LAUNCH_TEMPLATE).send().await;
        if existing.is_ok_and(|t| !t.launch_templates().is_empty()) {
            return;
        }
        let data = RequestLaunchTemplateData::builder().image_id(AMI).instance_type(InstanceType::T3Micro).build();
        self.ec2
            .create_launch_template()
            .launch_template_name(LAUNCH_TEMPLATE)
            .launch_template_data(data)
            .send()
            .await
            .expect("create launch template");
    }

    /// An Auto Scaling group in the first subnet, registering its members in `target_groups`.
    pub async fn auto_scaling_group(&self, name: &str, target_groups: &[&str], min: i32, max: i32, desired: i32) {
        self.ensure_launch_template().await;
        let template = LaunchTemplateSpecification::builder().launch_template_name(LAUNCH_TEMPLATE).build();
        self.autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(template)
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .set_target_group_arns(Some(target_groups.iter().map(|s| s.to_string()).collect()))
            .vpc_zone_identifier(&self.subnet_ids[0])
            .send()
            .await
            .expect("create auto scaling group");
    }

    /// Gives a group a target-tracking policy holding its average CPU at
    /// `target` % (moto stores it; it never evaluates it).
    pub async fn cpu_target_tracking(&self, name: &str, target: f64) {
        let metric = aws_sdk_autoscaling::types::PredefinedMetricSpecification::builder()
            .predefined_metric_type(aws_sdk_autoscaling::types::MetricType::AsgAverageCpuUtilization)
            .build();
        let config = aws_sdk_autoscaling::types::TargetTrackingConfiguration::builder()
            .predefined_metric_specification(metric)
            .target_value(target)
            .build();
        self.autoscaling
            .put_scaling_policy()
            .auto_scaling_group_name(name)
            .policy_name(format!("{name}-cpu{target}"))
            .policy_type("TargetTrackingScaling")
            .target_tracking_configuration(config)
            .send()
            .await
            .expect("put scaling policy");
    }

    /// Sets an Auto Scaling group's desired capacity (moto launches or
    /// terminates members at once; it never evaluates scaling policies).
    pub async fn set_desired(&self, name: &str, desired: i32) {
        self.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(desired)
            .send()
            .await
            .expect("set desired capacity");
    }

    /// Current members of an Auto Scaling group.
    pub async fn members(&self, name: &str) -> Vec<String> {
        let groups = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .expect("describe asg");
        groups.auto_scaling_groups()[0].instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect()
    }

    /// The seed's topology on one internal ALB named `backend`.
    pub async fn seed_topology(&self) -> SeedTopology {
        let lb = self.load_balancer("backend").await;
        let tg_a = self.target_group("basic-a", 9100).await;
        let tg_b = self.target_group("basic-b", 9100).await;
        let tg_asg = self.target_group("web-asg", 9100).await;
        self.listener(&lb, 9100, &tg_a).await;
        self.listener(&lb, 9101, &tg_b).await;
        self.listener(&lb, 9102, &tg_asg).await;
        let basic_a = self.instances(1, &[("Name", "basic-a"), ("Environment", "prod")]).await.remove(0);
        let basic_b = self.instances(1, &[("Name", "basic-b"), ("Environment", "staging")]).await.remove(0);
        self.register(&tg_a, std::slice::from_ref(&basic_a), 9100).await;
        self.register(&tg_b, std::slice::from_ref(&basic_b), 9100).await;
        self.auto_scaling_group("web", &[&tg_asg], 1, 4, 1).await;
        self.cpu_target_tracking("web", 50.0).await;
        SeedTopology { lb, basic_a, basic_b, asg_name: "web".into(), asg_target_group: tg_asg }
    }
}
