# Regenerates matrix.toml from routes.toml and the platform matrix (reference/bintu-api.md §4).
# Run from the repository root: python3 policies/tests/gen_matrix.py
import tomllib
routes = tomllib.load(open('policies/routes.toml','rb'))['route']
ADMIN_ONLY = set("getApiKey rotateApiKey rotatePlayerKey rotatePlaybackKey setWebhook inviteUser editUserRole resetUserToken deleteUser stopStream lockStream unlockStream deleteStream deleteTag getPermissionProfile readAudit issueUserToken".split())
ADMIN_USER = set("listUsers getUser listPermissions createStream setStreamTags setStreamPushUrl setStreamProcessing setStreamGroup getStreamOptions setStreamOptions deleteStreamOptions createTag editTag createPlaybackToken revokePlaybackToken".split())
ALL = set("getPlayerKey getOrganisation getBintuToken listStreams getStream validateStream listTags getMetrics".split())
PUBLIC = set("login resetPassword acceptInvite verifyPlaybackToken getJwks".split())
ROLES = ["nanoAdmin","nanoUser","nanoReadOnly"]
def allowed_roles(a):
    if a in ADMIN_ONLY: return {"nanoAdmin"}
    if a in ADMIN_USER: return {"nanoAdmin","nanoUser"}
    if a in ALL: return set(ROLES)
    if a in PUBLIC: return set(ROLES)
    raise SystemExit("unclassified action "+a)
def concrete(p, other=False):
    return p.replace("{id}", ("user-b" if other else "user-a") if p.startswith("/user/") else ("t1" if p.startswith("/tag/") else "s1"))
out = ["""# The permission matrix of the platform (reference/bintu-api.md §4), one case
# per route and caller: the three roles, the org API key (acts as nanoAdmin),
# the player key, an anonymous caller, and callers acting on another
# organisation's resource. Expectations come from the platform's documented
# matrix, not from the policy files, so a policy change that breaks the matrix
# fails `rolegate test`.
#
# Callers: `role = "<role>"` (a user of `org-a`) or `credential = "apikey" |
# "playerkey" | "anonymous"`. `other_org = true`: the resource is in `org-b`.
# `policies`: the determining policy ids (the permits of an allow, the
# satisfied forbids of a deny; empty: no permit applied).
"""]
def case(name, method, path, who, expect, policies, other=False):
    w = f'role = "{who}"' if who in ROLES else f'credential = "{who}"'
    o = "other_org = true\n" if other else ""
    pol = ", ".join(f'"{p}"' for p in policies)
    out.append(f'[[case]]\nname = "{name}"\nmethod = "{method}"\npath = "{path}"\n{w}\n{o}expect = "{expect}"\npolicies = [{pol}]\n')
for r in routes:
    a, m, p = r["action"], r["method"], concrete(r["path"])
    public = r["resource"].startswith("Service::")
    out.append(f"# ---- {m} {r['path']} → {a}\n")
    for role in ROLES:
        ok = role in allowed_roles(a)
        case(f"{role} {m} {r['path']}", m, p, role, "allow" if ok else "deny", ["public"] if (ok and public) else ([role] if ok else []))
    case(f"apikey {m} {r['path']}", m, p, "apikey", "allow", ["public"] if public else ["nanoAdmin"])
    # player key
    if public: case(f"playerkey {m} {r['path']}", m, p, "playerkey", "allow", ["public"])
    elif a == "getStream": case(f"playerkey {m} {r['path']}", m, p, "playerkey", "allow", ["playerKey-getStream"])
    elif a == "listStreams":
        case(f"playerkey {m} {r['path']} without tag filter", m, p, "playerkey", "deny", [])
        case(f"playerkey {m} {r['path']} with tag filter", m, p + "?tags[]=live&quantity=5", "playerkey", "allow", ["playerKey-listStreams"])
        case(f"playerkey {m} {r['path']} with empty tag filter", m, p + "?tags[]=", "playerkey", "deny", [])
    else: case(f"playerkey {m} {r['path']}", m, p, "playerkey", "deny", [])
    # anonymous
    if public: case(f"anonymous {m} {r['path']}", m, p, "anonymous", "allow", ["public"])
    else: case(f"anonymous {m} {r['path']}", m, p, "anonymous", "deny", ["tenant-anonymous"])
    # another organisation's resource
    if public:
        case(f"nanoAdmin {m} {r['path']} other org (public)", m, p, "nanoAdmin", "allow", ["public"], True)
    else:
        po = concrete(r["path"], True)
        case(f"nanoAdmin {m} {r['path']} other org", m, po, "nanoAdmin", "deny", ["tenant-isolation"], True)
        case(f"apikey {m} {r['path']} other org", m, po, "apikey", "deny", ["tenant-isolation"], True)
        if a in ("getStream",):
            case(f"playerkey {m} {r['path']} other org", m, p, "playerkey", "deny", ["tenant-isolation"], True)
out.append("# ---- users acting on other users of their organisation\n")
case("nanoUser GET /user/{id} of a colleague", "GET", "/user/user-c", "nanoUser", "allow", ["nanoUser"])
case("nanoReadOnly GET /user/{id} of a colleague", "GET", "/user/user-c", "nanoReadOnly", "deny", [])
case("nanoUser DELETE /user/{id} of a colleague", "DELETE", "/user/user-c", "nanoUser", "deny", [])
case("nanoAdmin DELETE /user/{id} of a colleague", "DELETE", "/user/user-c", "nanoAdmin", "allow", ["nanoAdmin"])
out.append("# ---- requests no route matches are denied\n")
case("no route: unknown path", "GET", "/nope", "nanoAdmin", "deny", [])
case("no route: unknown method on a known path", "PATCH", "/stream/s1", "nanoAdmin", "deny", [])
case("no route: extra segment", "GET", "/stream/s1/extra/more", "apikey", "deny", [])
case("literal beats parameter: POST /stream/validate is validateStream", "POST", "/stream/validate", "nanoReadOnly", "allow", ["nanoReadOnly"])
case("path is normalised before matching", "GET", "/stream//s1/./", "nanoReadOnly", "allow", ["nanoReadOnly"])
open('policies/tests/matrix.toml','w').write("\n".join(out))
