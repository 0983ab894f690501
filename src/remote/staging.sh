# A clean staging directory before es uploads a release's files into it:
#   sh -c "$(this file)" es STAGING RELEASE DIR...
# STAGING is emptied and made, with DIR... (the parents of extra templates);
# RELEASE, when not empty, is removed too (`es deploy --force` stages again).
set -e
staging=$1 release=$2
shift 2
rm -rf "$staging"
[ -z "$release" ] || rm -rf "$release"
mkdir -p "$staging" "$@"
