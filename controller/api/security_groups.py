"""Routes: /api/v1/security-groups"""

from fastapi import APIRouter, Query, Response, status

from controller.api.deps import AdminDep, DbDep, PageDep
from controller.schemas import security_groups as schema
from controller.services import security_group_rules as rules
from controller.services import security_groups as service

router = APIRouter(prefix="/security-groups", tags=["security-groups"])


@router.post("", response_model=schema.SecurityGroup, status_code=status.HTTP_201_CREATED,
             summary="Create a security group in a VPC")
def create_security_group(_: AdminDep, db: DbDep,
                          req: schema.SecurityGroupCreate) -> schema.SecurityGroup:
    return service.create_security_group(db, req)


@router.get("", response_model=schema.SecurityGroupList, summary="List security groups")
def list_security_groups(_: AdminDep, db: DbDep, page: PageDep,
                         vpc_id: str | None = Query(None, description="Only this VPC",
                                                    examples=["vpc-2m4n6p8r0t2v4x6z8b0d"]),
                         ) -> schema.SecurityGroupList:
    return service.list_security_groups(db, page.max_results, page.next_token, vpc_id)


@router.get("/{security_group_id}", response_model=schema.SecurityGroup,
            summary="Show a security group")
def get_security_group(_: AdminDep, db: DbDep, security_group_id: str) -> schema.SecurityGroup:
    return service.get_security_group(db, security_group_id)


@router.delete("/{security_group_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a security group (refused while NICs are members)")
def delete_security_group(_: AdminDep, db: DbDep, security_group_id: str) -> Response:
    service.delete_security_group(db, security_group_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/{security_group_id}", response_model=schema.SecurityGroup,
              summary="Rename, describe or switch inner access of a security group")
def update_security_group(_: AdminDep, db: DbDep, security_group_id: str,
                          req: schema.SecurityGroupUpdate) -> schema.SecurityGroup:
    return service.update_security_group(db, security_group_id, req)


@router.post("/{security_group_id}/rules", response_model=schema.SecurityGroupRule,
             status_code=status.HTTP_201_CREATED,
             summary="Add a rule (an identical existing rule is returned with 200)",
             responses={200: {"model": schema.SecurityGroupRule,
                              "description": "The rule exists already; nothing changed"}})
def add_rule(_: AdminDep, db: DbDep, security_group_id: str,
             req: schema.SecurityGroupRuleCreate, response: Response) -> schema.SecurityGroupRule:
    rule, created = rules.add_rule(db, security_group_id, req)
    if not created:
        response.status_code = status.HTTP_200_OK
    return rule


@router.get("/{security_group_id}/rules", response_model=schema.SecurityGroupRuleList,
            summary="List a group's rules in evaluation order")
def list_rules(_: AdminDep, db: DbDep, security_group_id: str,
               direction: schema.Direction | None = Query(None, description="Only this direction"),
               hits: bool = Query(False, description="Add packet counters from the hosts"),
               ) -> schema.SecurityGroupRuleList:
    return rules.list_rules(db, security_group_id, direction, hits)


@router.delete("/{security_group_id}/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a rule; flows it admitted are cut")
def remove_rule(_: AdminDep, db: DbDep, security_group_id: str, rule_id: str) -> Response:
    rules.remove_rule(db, security_group_id, rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{security_group_id}/rules/revoke", status_code=status.HTTP_200_OK,
             summary="Remove the rule with exactly these fields")
def revoke_rule(_: AdminDep, db: DbDep, security_group_id: str,
                req: schema.SecurityGroupRuleCreate) -> dict:
    return {"id": rules.remove_matching_rule(db, security_group_id, req), "deleted": True}


@router.post("/{security_group_id}/join", response_model=schema.SecurityGroup,
             summary="Add an instance's NIC to the group")
def join(_: AdminDep, db: DbDep, security_group_id: str,
         req: schema.SecurityGroupMembership) -> schema.SecurityGroup:
    return service.join_security_group(db, security_group_id, req.instance_id)


@router.post("/{security_group_id}/leave", response_model=schema.SecurityGroup,
             summary="Take an instance's NIC out of the group (flows it admitted are cut)")
def leave(_: AdminDep, db: DbDep, security_group_id: str,
          req: schema.SecurityGroupMembership) -> schema.SecurityGroup:
    return service.leave_security_group(db, security_group_id, req.instance_id)


explain_router = APIRouter(tags=["security-groups"])


@explain_router.post("/security-group-explain", response_model=schema.ExplainResult,
                     summary="Which rule decides a new connection through an instance's NIC")
def explain(_: AdminDep, db: DbDep, req: schema.ExplainRequest) -> schema.ExplainResult:
    return rules.explain(db, req)
