#!/usr/bin/env bash
# Fetch the free photographs the bundled model trains on into OUT (default data/photos):
#   OUT/lomiri/NAME.jpg  (lomiri-wallpapers-16.04 and -20.04: every photograph; 3 illustrations left out)
#   OUT/plasma/NAME.jpg  (plasma-workspace-wallpapers: the 11 photographs among its illustrations)
# Authors and licences: docs/datasets.md ("photo-bsr"). Needs apt-get and dpkg (Debian/Ubuntu).
set -euo pipefail
out=${1:-data/photos}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 plasma-workspace-wallpapers >/dev/null)
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/x"; done
mkdir -p "$out/lomiri" "$out/plasma"
# lomiri: all photographs (left out as illustrations: Fossa, Painting-Colors, umang)
for name in Bridge_by_Sander_Klootwijk Dragonfly_by_Bolly Infinite-Sea_by_Aury88 Kleiber_by_Lukas_Baubkus \
    Picture_0B_by_freespace Picture_1A_by_freespace Wine_by_Jakkub_Mede aitzgorri_by_Aitzol_Berasategi \
    analogpattern_by_Peter_Nerlich free_by_Peter_Nerlich friends_by_Aitzol_Berasategi \
    greentock_by_Peter_Nerlich life_by_Aitzol_Berasategi picosdeeuropa_by_Aitzol_Berasategi \
    seeding_by_Clements_Engelhardt sunset_by_Aitzol_Berasategi; do
    cp "$work/x/usr/share/backgrounds/$name.jpg" "$out/lomiri/"
done
# plasma: the photographs only (the largest image of each), by this listed choice
for name in BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path \
    summer_1am; do
    src=$(ls -S "$work/x/usr/share/wallpapers/$name/contents/images/"* | head -1)
    cp "$src" "$out/plasma/$name.jpg"
done
echo "$(find "$out" -type f | wc -l) photos in $out"
