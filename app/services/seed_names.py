"""Name pools for the synthetic registry: first names by gender, family names by province."""

from __future__ import annotations

MALE_FIRST = (
    "Muhammad", "Ahmed", "Ali", "Hassan", "Hussain", "Usman", "Bilal", "Imran", "Asif",
    "Tariq", "Zahid", "Khalid", "Rashid", "Javed", "Naveed", "Shahid", "Waqar", "Faisal",
    "Kamran", "Irfan", "Nadeem", "Sajid", "Abdul Rehman", "Abdullah", "Hamza", "Umar",
    "Saleem", "Arshad", "Aslam", "Akram", "Ghulam Mustafa", "Ghulam Rasool", "Allah Ditta",
    "Manzoor", "Mushtaq", "Nasir", "Qaiser", "Rizwan", "Sohail", "Yasir", "Zubair", "Fahad",
    "Adnan", "Junaid", "Waseem", "Babar", "Amjad", "Ijaz", "Iqbal", "Ayaz", "Sher Khan",
    "Gul Khan", "Noor Muhammad", "Dost Muhammad", "Jan Muhammad", "Wali Khan", "Zarif",
    "Aurangzeb", "Shafiq", "Sarfraz", "Riaz", "Pervaiz", "Mehboob", "Liaquat", "Haider",
    "Ibrahim", "Ismail", "Yousaf", "Younas", "Zafar", "Anwar", "Bashir", "Nazir", "Rafiq",
    "Sikandar", "Abid", "Atif", "Danish", "Ehsan", "Farhan", "Haroon", "Mudassar", "Shoaib",
)

FEMALE_FIRST = (
    "Fatima", "Ayesha", "Zainab", "Maryam", "Khadija", "Amina", "Sana", "Hina", "Sadia",
    "Nasreen", "Parveen", "Shazia", "Rubina", "Samina", "Nazia", "Rukhsana", "Shamim",
    "Bushra", "Kausar", "Naseem", "Razia", "Saima", "Uzma", "Farzana", "Shabana", "Tahira",
    "Asma", "Iqra", "Mehwish", "Rabia", "Sumaira", "Tasleem", "Zubaida", "Zahida", "Nargis",
    "Sughra", "Kulsoom", "Hajra", "Safia", "Sakina", "Bibi Jan", "Gul Bano", "Zarmina",
    "Palwasha", "Mah Jabeen", "Noor Jahan", "Shagufta", "Robina", "Nusrat", "Shaheen",
    "Yasmin", "Afshan", "Anam", "Aqsa", "Areeba", "Hafsa", "Laiba", "Mahnoor", "Noreen",
    "Rani", "Sajida", "Sobia", "Sidra", "Tayyaba", "Ghazala", "Humaira", "Irum", "Javeria",
)

# Family (or clan/tribe) names, with a province-flavoured pool; every pool is non-empty.
FAMILY_COMMON = ("Ahmed", "Ali", "Hussain", "Khan", "Shah", "Qureshi", "Siddiqui", "Ansari")
FAMILY_BY_PROVINCE: dict[str, tuple[str, ...]] = {
    "PK1": ("Raja", "Sudhan", "Abbasi", "Mughal", "Awan", "Gujjar", "Rathore", "Chaudhry"),
    "PK2": ("Baloch", "Bugti", "Marri", "Mengal", "Rind", "Raisani", "Kakar", "Achakzai",
            "Mandokhel", "Zehri", "Jamali", "Magsi"),
    "PK3": ("Baig", "Shah", "Hunzai", "Balti", "Shina", "Khan", "Jan", "Hussaini"),
    "PK4": ("Abbasi", "Malik", "Chaudhry", "Janjua", "Satti", "Awan", "Butt", "Raja"),
    "PK5": ("Khan", "Yousafzai", "Afridi", "Khattak", "Marwat", "Bangash", "Orakzai",
            "Mohmand", "Shinwari", "Durrani", "Swati", "Tanoli", "Jadoon", "Wazir"),
    "PK6": ("Chaudhry", "Malik", "Butt", "Awan", "Rajput", "Arain", "Gujjar", "Jatt",
            "Bhatti", "Cheema", "Warraich", "Sandhu", "Mughal", "Sheikh", "Kharal", "Gondal"),
    "PK7": ("Memon", "Soomro", "Bhutto", "Jatoi", "Shaikh", "Mirani", "Chandio", "Abro",
            "Lashari", "Panhwar", "Talpur", "Junejo", "Mahar", "Kalhoro", "Brohi", "Solangi"),
}

# Roots for union council and village names; prefixes give each province its flavour.
PLACE_ROOTS = (
    "Noor", "Shah", "Gul", "Sultan", "Baghban", "Chiragh", "Jhang", "Kot", "Pind", "Mor",
    "Darya", "Sabz", "Barkat", "Rehmat", "Fateh", "Hayat", "Karam", "Nawab", "Pir", "Sain",
    "Mian", "Jamal", "Qadir", "Sharif", "Bahadur", "Chanan", "Dera", "Ganj", "Kalan", "Khurd",
)
VILLAGE_PREFIX: dict[str, tuple[str, ...]] = {
    "PK1": ("Dhok", "Bandi", "Mohra"),
    "PK2": ("Killi", "Goth", "Kalat"),
    "PK3": ("Gah", "Mohalla", "Das"),
    "PK4": ("Mohalla", "Sector", "Dhok"),
    "PK5": ("Kalay", "Banda", "Killi"),
    "PK6": ("Chak", "Basti", "Mauza", "Dhok"),
    "PK7": ("Goth", "Deh", "Basti"),
}
